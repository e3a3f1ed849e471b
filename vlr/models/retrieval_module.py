"""`RetrievalModule`: the encoder, the objective, and what they log.

The reference's lifecycle (building it, its evaluation rows, what checkpoints hold of it) is
`vlr.reference.lifecycle`, called here through the `Reference` protocol. What the training
loop needs besides (the objective's epoch schedule, SAD's stage-2 restore, the RNG a resumed
run continues from) lives in `vlr.callbacks` (`ObjectiveSchedule`, `TorchRNGState`), which the
module adds to every run; the non-finite policy is `vlr.models.nonfinite`; the step count and
optimizer groups are `vlr.models.schedules`. Building the evaluators is `_build_evaluator`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

import lightning.pytorch as pl
import torch
from torch import nn

from vlr.callbacks import ObjectiveSchedule, SkippedImages, TorchRNGState
from vlr.errors import ConfigError
from vlr.metrics import RetrievalEvaluator, build_evaluator
from vlr.metrics.ranking import TIE_TOLERANCE, check_tie_tolerance, check_ties
from vlr.models.encoder import DualEncoder
from vlr.models.nonfinite import NonFiniteGuard
from vlr.models.rerank import TokenStore, pair_scorer
from vlr.models.schedules import parameter_groups, scale_learning_rates, total_training_steps
from vlr.models.with_fusion import FusionOptions, build_fusion, negatives_generator, training_terms_with_itm
from vlr.objectives import Objective
from vlr.reference import Reference, lifecycle

log = logging.getLogger(__name__)


class RetrievalModule(pl.LightningModule):
    """Trains ``encoder`` with ``objective``; validates and tests with `RetrievalEvaluator`.

    ``reference`` is the intra-modal reference (the ``reference`` config group, see
    `vlr.reference`): what the structure-preserving objectives distil from and what
    overlap@k measures preservation against, for every objective alike. A built reference,
    a factory called with the encoder (``reference=frozen_init`` is one), or None for the
    frozen initial towers.
    """

    def __init__(
        self,
        image_tower: nn.Module,
        text_tower: nn.Module,
        objective: Objective,
        embed_dim: int | None = 256,
        optimizer: Callable | None = None,
        scheduler: Callable | None = None,
        evaluation: dict | None = None,
        tokenizer: dict | None = None,
        reference: nn.Module | Callable[[nn.Module], nn.Module] | None = None,
        skip_nonfinite: bool = False,
        grad_checkpointing: bool = False,
        compile: bool = False,
        fusion: dict | None = None,
    ):
        super().__init__()
        # plain data only, so checkpoints load with weights_only=True; the full config lives in .hydra/
        self.save_hyperparameters(
            ignore=["image_tower", "text_tower", "objective", "optimizer", "scheduler", "reference"], logger=False
        )
        for option, value in (("grad_checkpointing", grad_checkpointing), ("compile", compile)):
            if not isinstance(value, bool):
                raise ConfigError(f"model.{option} must be true or false, got {value!r}")
        self.encoder = DualEncoder(image_tower, text_tower, embed_dim)
        if grad_checkpointing:  # memory for compute: the towers recompute activations in backward
            for tower in (image_tower, text_tower):
                getattr(tower, "set_grad_checkpointing")(True)  # noqa: B009 -- every vlr tower has it
            self.encoder.grad_checkpointing = True  # objectives that re-run the towers check it
        # frozen_init copies the towers only for an objective that distils during training
        self.reference: Reference = lifecycle.build_reference(
            reference, self.encoder, training_rows=objective.needs_reference
        )
        if compile:  # after the reference's copy (which stays eager); in place, so weight names do not change
            self._compile_towers(objective)
        self.objective = objective
        objective.bind_reference(self.reference.image_dim, self.reference.text_dim, int(self.encoder.embed_dim))
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        evaluation = dict(evaluation or {})
        self.eval_ks = tuple(evaluation.get("ks", (1, 5, 10)))
        self.eval_ndcg_ks = tuple(evaluation.get("ndcg_ks", (10, 20, 50)))
        self.eval_overlap_ks = tuple(evaluation.get("overlap_ks", (10,)))
        self.eval_ties = check_ties(evaluation.get("ties", "expected"))
        self.eval_tie_tolerance = check_tie_tolerance(evaluation.get("tie_tolerance", TIE_TOLERANCE))
        self.chance_levels: dict[str, dict[str, float]] = {}  # per split, filled after a test
        # every validation during fit: {"epoch", "step", "val/...": value}; travels in checkpoints so a
        # resumed run still knows its best epoch (vlr.runs.best_epoch_metrics)
        self.val_history: list[dict[str, float]] = []
        self.save_rankings = 0  # > 0: a final evaluation keeps per-query rankings (set by the entry points)
        self.evaluators = nn.ModuleDict()
        self.nonfinite = NonFiniteGuard(skip_nonfinite)
        self._setup_fusion(fusion, dict(evaluation.get("rerank") or {}))

    def _setup_fusion(self, fusion: dict | None, rerank: dict) -> None:
        """``model.fusion`` (`vlr.models.with_fusion`): the fusion encoder and ITM head; with
        ``eval.rerank.k`` > 0, evaluations also re-rank each query's ITC top k by ITM."""
        self.fusion_options = None if fusion is None else FusionOptions(dict(fusion))
        if self.fusion_options is not None:
            self.fusion = build_fusion(self.fusion_options, self.encoder.image_tower, self.encoder.text_tower)
        self.rerank_k = int(rerank.get("k") or 0)
        self.rerank_batch_size = int(rerank.get("batch_size") or 256)
        self.rerank_itc_weight = float(rerank.get("itc_weight") or 0.0)
        for name, value, low in (("k", self.rerank_k, 0), ("batch_size", self.rerank_batch_size, 1)):
            if value < low:
                raise ConfigError(f"eval.rerank.{name} must be >= {low}, got {value}")
        if self.rerank_itc_weight < 0:
            raise ConfigError(f"eval.rerank.itc_weight must be >= 0, got {self.rerank_itc_weight}")
        if self.rerank_k and self.fusion_options is None:
            raise ConfigError(f"eval.rerank.k={self.rerank_k} re-ranks with the ITM head: it needs model.fusion")
        self.token_stores: dict[str, TokenStore] = {}
        self._total_steps: int | None = None  # the curriculum's step count (`_curriculum_steps`)

    def _compile_towers(self, objective: Objective) -> None:
        """``model.compile=true``: `torch.compile` each tower in place (``nn.Module.compile``),
        so checkpoints keep the eager names and load either way."""
        if getattr(objective, "reruns_towers", False):  # CoVLR's virtual step over the towers
            raise ConfigError(
                "model.compile=true: objective=covlr re-runs the towers with stepped weights through "
                "torch.func.functional_call, which a compiled tower does not follow; use "
                "objective.virtual_params=projections, or model.compile=false"
            )
        for tower in (self.encoder.image_tower, self.encoder.text_tower):
            tower.compile()

    def configure_callbacks(self) -> list:
        """The loop's bookkeeping every run needs; once per trainer (a ``trainer.test`` after
        ``trainer.fit`` finds them attached already)."""
        present = {type(c) for c in getattr(self.trainer, "callbacks", [])}
        return [cb() for cb in (ObjectiveSchedule, TorchRNGState, SkippedImages) if cb not in present]

    # -- embedding ----------------------------------------------------------------------
    def embed_images(self, images):
        return self.encoder.embed_images(images)

    def embed_texts(self, input_ids, attention_mask):
        return self.encoder.embed_texts(input_ids, attention_mask)

    # -- training -----------------------------------------------------------------------
    def _curriculum_steps(self) -> int:
        """The run's optimizer steps, for the negatives' curriculum: counted once per fit (the
        count builds the training set's pairs), 0 when there is no curriculum."""
        if self.fusion_options is None or self.fusion_options.negative_temperature_start is None:
            return 0
        if self._total_steps is None:
            self._total_steps = total_training_steps(self.trainer)
        return self._total_steps

    def on_fit_start(self) -> None:
        self._total_steps = None  # this fit's trainer decides it (`_curriculum_steps`)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        if self.fusion_options is None:
            terms = self.objective.batch_terms(self.encoder, batch, self.reference)
        else:
            options = self.fusion_options
            generator = negatives_generator(options.seed, self.global_step, batch_idx)
            temperature = options.temperature_at(self.global_step, self._curriculum_steps())
            terms = training_terms_with_itm(
                self.encoder, self.objective, self.reference, self.fusion, options, batch, generator, temperature
            )
        loss = torch.stack(list(terms.values())).sum()
        n = batch["image_idx"].shape[0]

        def where() -> str:
            return f"step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx})"

        if not self.nonfinite(loss, terms, where):
            self.log("train/skipped_nonfinite", float(self.nonfinite.skipped), batch_size=n)
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train/loss/{name}", value, batch_size=n)
        for name, scalar in self.objective.log_values().items():
            self.log(f"train/{name}", scalar, batch_size=n)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.objective.apply_bounds_()  # after the step: the objective's bounds, in place

    def selectable_val_history(self) -> list[dict[str, float]]:
        """The validations the best checkpoint is chosen among (stage 2's, for a two-stage objective)."""
        stages = self.objective.stages(self.trainer.max_epochs)
        start = stages.stage2_epoch if stages is not None else 0
        return [h for h in self.val_history if h["epoch"] >= start]

    def loadable_state_dict(self, state_dict: dict) -> dict:
        """A checkpoint's tensors as this module loads them: the reference's as configured here
        (`vlr.reference.lifecycle.with_configured_reference`)."""
        return lifecycle.with_configured_reference(self.reference, state_dict)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vlr_val_history"] = [dict(h) for h in self.val_history]
        checkpoint["vlr_nonfinite"] = self.nonfinite.state_dict()
        checkpoint.update(lifecycle.checkpoint_entries(self.reference))

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        lifecycle.load_checkpoint_entries(self.reference, checkpoint)  # the towers are about to hold trained weights
        if "state_dict" in checkpoint:  # Lightning loads the weights after this hook
            checkpoint["state_dict"] = self.loadable_state_dict(checkpoint["state_dict"])
        self.val_history = [dict(h) for h in checkpoint.get("vlr_val_history", [])]
        self.nonfinite.load_state_dict(checkpoint.get("vlr_nonfinite", {}))

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set")
        scales = {} if self.fusion_options is None else {"fusion.": self.fusion_options.lr_scale}
        optimizer = scale_learning_rates(self.optimizer_factory(params=parameter_groups(self, scales)))
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=total_training_steps(self.trainer))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        split = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        datamodule: Any = getattr(self.trainer, "datamodule", None)
        if split is None or not hasattr(datamodule, "eval_targets"):
            return  # fitting from bare dataloaders: no evaluation split to prepare
        device = self.trainer.strategy.root_device
        lifecycle.prepare_reference(self.reference, stage, split, datamodule, self.encoder, device)
        if split in self.evaluators:
            return
        self._build_evaluator(split, datamodule, stage)

    def _build_evaluator(self, split: str, datamodule: Any, stage: str) -> None:
        """The evaluator of ``split`` with the relevances the run asks for (the ``relevance``
        group, which vlr.build passes as model.evaluation.relevance): every NDCG is named after
        the one that graded it. Construction itself lives in `vlr.metrics.relevance`."""
        self.evaluators[split] = build_evaluator(
            datamodule.eval_targets(split),
            dict(self.hparams.get("evaluation") or {}).get("relevance"),
            split=split,
            ks=self.eval_ks,
            ndcg_ks=self.eval_ndcg_ks,
            overlap_ks=self.eval_overlap_ks,
            ties=self.eval_ties,
            tie_tolerance=self.eval_tie_tolerance,
            save_rankings=self.save_rankings if stage != "fit" else 0,
        ).to(self.device)

    def on_train_start(self) -> None:
        lifecycle.training_started(self.reference)  # no evaluation rows can be computed from here on

    @torch.no_grad()
    def _eval_step(self, split: str, batch: dict) -> None:
        evaluator = self._evaluator(split)
        if self.rerank_k:
            self._eval_step_with_tokens(split, batch)
            return
        if "images" in batch:
            images = batch["images"]
            evaluator.update(
                image_emb=self.embed_images(images),
                image_idx=batch["image_idx"],
                image_ref=self.reference.embed("image", split, batch),
            )
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            evaluator.update(
                text_emb=self.embed_texts(ids, mask),
                text_idx=batch["caption_idx"],
                text_ref=self.reference.embed("text", split, batch),
            )

    def _eval_step_with_tokens(self, split: str, batch: dict) -> None:
        """``_eval_step`` when re-ranking: the same embeddings, from the pass that also keeps the
        token states the ITM head re-scores with."""
        evaluator, store = self._evaluator(split), self.token_stores.setdefault(split, TokenStore())
        if "images" in batch:
            out = self.encoder.image_with_tokens(batch["images"])
            evaluator.update(
                image_emb=out["image_emb"],
                image_idx=batch["image_idx"],
                image_ref=self.reference.embed("image", split, batch),
            )
            store.add_images(batch["image_idx"], out["image_tokens"])
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            out = self.encoder.text_with_tokens(ids, mask)
            evaluator.update(
                text_emb=out["text_emb"],
                text_idx=batch["caption_idx"],
                text_ref=self.reference.embed("text", split, batch),
            )
            store.add_texts(batch["caption_idx"], out["text_tokens"], mask)

    def _evaluator(self, split: str) -> RetrievalEvaluator:
        return cast(RetrievalEvaluator, self.evaluators[split])

    def _log_evaluation(self, split: str) -> None:
        evaluator = self._evaluator(split)
        evaluator.allow_partial = self._loader_limited(split)
        if self.rerank_k:
            store = self.token_stores.setdefault(split, TokenStore())
            evaluator.rerank_k, evaluator.rerank_itc_weight = self.rerank_k, self.rerank_itc_weight
            evaluator.pair_scorer = pair_scorer(self.fusion.match_score, store.gathered(), self.rerank_batch_size)
            store.reset()
        metrics = evaluator.compute()  # already global: every rank holds the same numbers
        if evaluator.last_coverage is not None:
            log.warning(
                "%s metrics are over a limited pass (fast_dev_run, overfit_batches or limit_%s_batches): "
                "%d of %d images and %d of %d captions; not comparable with a full evaluation",
                split,
                split,
                *evaluator.last_coverage,
            )
        elif self.trainer.state.fn != "fit":  # a final evaluation: its table shows chance for the split
            self.chance_levels[split] = {f"{split}/{k}": v for k, v in evaluator.chance().items()}
        elif not self.trainer.sanity_checking:
            self.val_history.append(
                {
                    "epoch": self.current_epoch,
                    "step": self.global_step,
                    **{f"{split}/{k}": float(v) for k, v in metrics.items()},
                }
            )
        evaluator.reset()
        self.log_dict({f"{split}/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)

    def _loader_limited(self, split: str) -> bool:
        """The user limited this split's loader (debug presets): score what it saw."""
        trainer = self.trainer
        limit = trainer.limit_val_batches if split == "val" else trainer.limit_test_batches
        return (
            bool(getattr(trainer, "fast_dev_run", False))
            or bool(getattr(trainer, "overfit_batches", 0))
            or not (isinstance(limit, float) and limit == 1.0)
        )

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step("val", batch)

    def on_validation_epoch_end(self):
        self._log_evaluation("val")

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step("test", batch)

    def on_test_epoch_end(self):
        self._log_evaluation("test")
