"""`RetrievalModule`: two towers, their projections, an objective, and evaluation."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from vlr.data.sampler import EpochSampler
from vlr.errors import ConfigError
from vlr.metrics import RetrievalEvaluator
from vlr.metrics.ranking import check_ties
from vlr.objectives import Objective
from vlr.reference import build_reference
from vlr.reference.references import FrozenInitReference

log = logging.getLogger(__name__)


class DualEncoder(nn.Module):
    """Image and text towers with linear projections into a shared, L2-normalised space.

    ``embed_dim=None`` keeps the towers' own output space (identity projections), for
    towers that already share one (CLIP's projected embeddings)."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: int | None):
        super().__init__()
        self.image_tower, self.text_tower = image_tower, text_tower
        if embed_dim is None:
            if image_tower.out_dim != text_tower.out_dim:
                raise ValueError(
                    f"model.embed_dim=null needs towers with one output size, got image {image_tower.out_dim} "
                    f"and text {text_tower.out_dim}; set model.embed_dim"
                )
            self.image_proj, self.text_proj = nn.Identity(), nn.Identity()
            self.embed_dim = image_tower.out_dim
        else:
            self.image_proj = nn.Linear(image_tower.out_dim, embed_dim)
            self.text_proj = nn.Linear(text_tower.out_dim, embed_dim)
            self.embed_dim = embed_dim

    def forward(self, images, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_images(images), self.embed_texts(input_ids, attention_mask)

    def tower_features(self, images, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """The towers' outputs before the projections (what ``forward`` projects and normalises)."""
        return self.image_tower(images), self.text_tower(input_ids, attention_mask)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_tower(images)), dim=-1)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_tower(input_ids, attention_mask)), dim=-1)


class RetrievalModule(pl.LightningModule):
    """Trains ``encoder`` with ``objective``; validates and tests with `RetrievalEvaluator`.

    ``reference`` is the intra-modal reference (``objective.teacher``, see
    `vlr.reference`): what the structure-preserving objectives distil from and what
    overlap@k measures preservation against, for every objective alike.
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
        teacher_cache: bool | str = "auto",
    ):
        super().__init__()
        # plain data only, so checkpoints load with weights_only=True; the full config lives in .hydra/
        self.save_hyperparameters(
            ignore=["image_tower", "text_tower", "objective", "optimizer", "scheduler"], logger=False
        )
        self.encoder = DualEncoder(image_tower, text_tower, embed_dim)
        self.reference = build_reference(objective.teacher, objective.teacher_features, self.encoder)
        self.objective = objective
        objective.bind_reference(self.reference.image_dim, self.reference.text_dim, self.encoder.embed_dim)
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        evaluation = dict(evaluation or {})
        self.eval_ks = tuple(evaluation.get("ks", (1, 5, 10)))
        self.eval_ndcg_ks = tuple(evaluation.get("ndcg_ks", (10, 20, 50)))
        self.eval_overlap_ks = tuple(evaluation.get("overlap_ks", (10,)))
        self.eval_ties = check_ties(evaluation.get("ties", "expected"))
        self.chance_levels: dict[str, dict[str, float]] = {}  # per split, filled after a test
        # every validation during fit: {"epoch", "step", "val/...": value}; travels in checkpoints so a
        # resumed run still knows its best epoch (vlr.runs.best_epoch_metrics)
        self.val_history: list[dict[str, float]] = []
        self.save_rankings = 0  # > 0: a final evaluation keeps per-query rankings (set by the entry points)
        self.evaluators = nn.ModuleDict()
        if teacher_cache not in (True, False, "auto"):
            raise ValueError(f"model.teacher_cache must be true, false or auto, got {teacher_cache!r}")
        self.teacher_cache = teacher_cache
        self._best_restored = False
        self.skip_nonfinite, self.skipped_steps = False, 0  # set from trainer.skip_nonfinite by vlr.train
        self._resume_pending = False

    # -- embedding ----------------------------------------------------------------------
    def embed_images(self, images):
        return self.encoder.embed_images(images)

    def embed_texts(self, input_ids, attention_mask):
        return self.encoder.embed_texts(input_ids, attention_mask)

    def _train_reference_cacheable(self) -> bool:
        """``model.teacher_cache``; auto = cache when training images are not augmented."""
        if self.teacher_cache != "auto":
            return bool(self.teacher_cache)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        return datamodule is not None and not getattr(datamodule, "augment", True)

    def teacher_embeddings(self, batch: dict) -> dict[str, torch.Tensor]:
        """Reference embeddings of a training batch, for objectives with ``needs_teacher``."""
        cacheable = self._train_reference_cacheable()
        # in the model's dtype: feature files hold float32, a 64-true run computes in float64
        dtype = next(p.dtype for p in self.encoder.parameters() if p.is_floating_point())
        return {kind: self.reference.embed(kind, "train", batch, cacheable).to(dtype) for kind in ("image", "text")}

    # -- training -----------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        if self.objective.owns_training_step:
            terms = self.objective.training_step(self, batch)
        else:
            image_emb = self.embed_images(batch["images"])
            text_emb = self.embed_texts(batch["input_ids"], batch["attention_mask"])
            teacher = self.teacher_embeddings(batch) if getattr(self.objective, "needs_teacher", False) else None
            terms = self.objective(image_emb, text_emb, batch["image_idx"], teacher=teacher)
        loss = torch.stack(list(terms.values())).sum()
        n = batch["image_idx"].shape[0]
        if not bool(torch.isfinite(loss)):
            return self._nonfinite(terms, n)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        for name, value in terms.items():
            self.log(f"train/loss/{name}", value, batch_size=n)
        for name, value in self.objective.log_values().items():
            self.log(f"train/{name}", value, batch_size=n)
        return loss

    def _nonfinite(self, terms: dict, n: int) -> None:
        """A non-finite loss: stop naming the step and term, or skip the step (``trainer.skip_nonfinite``).

        The loss is computed over the gathered global batch, so every rank sees the same
        value and all of them skip together (no rank waits in a collective alone)."""
        bad = [f"{k}={float(v.detach())}" for k, v in terms.items() if not bool(torch.isfinite(v))]
        where = (
            f"step {self.global_step} (epoch {self.current_epoch}, batch {self.trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if not self.skip_nonfinite:
            raise FloatingPointError(
                f"non-finite loss at {where}: {', '.join(bad)}; trainer.skip_nonfinite=true skips such steps"
            )
        self.skipped_steps += 1
        log.warning(
            "skipping %s: non-finite loss terms %s (%d skipped so far)", where, ", ".join(bad), self.skipped_steps
        )
        self.log("train/skipped_nonfinite", float(self.skipped_steps), batch_size=n)
        return None

    def on_fit_start(self) -> None:
        self.objective.set_max_epochs(self.trainer.max_epochs)
        self._check_stage_schedule()

    def _check_stage_schedule(self) -> None:
        """A two-stage objective (SAD) needs a stage 2 to reach and, restoring the best stage-1
        checkpoint, validation and a monitoring ModelCheckpoint in stage 1: refused before any
        step, in one line, rather than failing (or restoring an arbitrary checkpoint) later."""
        start = self.objective.selection_from_epoch
        if not start:
            return
        trainer = self.trainer
        if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= start:
            raise ConfigError(
                f"objective.stage1_epochs={start} but trainer.max_epochs={trainer.max_epochs}: stage 2 would "
                "never run; lower objective.stage1_epochs or raise trainer.max_epochs"
            )
        if self.objective.restore_best_at_epoch is None:
            return
        callback = trainer.checkpoint_callback
        if not isinstance(callback, ModelCheckpoint) or not callback.monitor:
            raise ConfigError(
                "objective.stage2_from=best needs a ModelCheckpoint that monitors a val metric (callbacks=default); "
                "or set objective.stage2_from=last"
            )
        no_val = trainer.limit_val_batches == 0 or (trainer.check_val_every_n_epoch or 1) > start
        if no_val:
            raise ConfigError(
                f"objective.stage2_from=best: stage 1 ({start} epochs) is never validated "
                f"(trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}, "
                f"trainer.limit_val_batches={trainer.limit_val_batches}); or set objective.stage2_from=last"
            )

    def on_train_start(self) -> None:
        # epoch schedules (SAD's stage, triplet's warm-up) follow the restored epoch: Lightning runs
        # no epoch-start hook for an epoch resumed in its middle
        self.objective.on_train_epoch_start(self.current_epoch)
        if self._resume_pending:
            self._resume_pending = False
            self._continue_epoch_order()

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.objective.after_optimizer_step()  # after the step: the objective's bounds, in place

    def on_train_epoch_start(self) -> None:
        self.objective.on_train_epoch_start(self.current_epoch)
        start = self.objective.selection_from_epoch
        if start and self.current_epoch >= start and not self._best_restored:
            if self.objective.restore_best_at_epoch is not None:
                self._restore_best_checkpoint()
            self._start_selection_over()
            self._best_restored = True

    def _start_selection_over(self) -> None:
        """Stage 2 picks its best checkpoint among its own epochs, as the release's separate
        stage-2 run does: the checkpoint callback forgets stage 1's scores (best.ckpt is
        overwritten at stage 2's first validation), and so does the reported best epoch."""
        callback = self.trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint):
            callback.best_k_models, callback.kth_best_model_path = {}, ""
            callback.best_model_score, callback.best_model_path = None, ""
            callback.kth_value = torch.tensor(float("inf") if callback.mode == "min" else -float("inf"))

    def selectable_val_history(self) -> list[dict[str, float]]:
        """The validations the best checkpoint is chosen among (stage 2's, for a two-stage objective)."""
        start = self.objective.selection_from_epoch or 0
        return [h for h in self.val_history if h["epoch"] >= start]

    # Run state beyond Lightning's: the stage-2 restore happens once per run, the skip count
    # carries on, and the global torch RNG (dropout) continues where it was, so a resumed run
    # matches an uninterrupted one bit for bit on CPU. Under DDP every rank draws the same
    # dropout masks' worth of numbers, so rank 0's state serves all ranks.
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["vlr_best_restored"] = self._best_restored
        checkpoint["vlr_skipped_steps"] = self.skipped_steps
        checkpoint["vlr_torch_rng"] = torch.get_rng_state()
        checkpoint["vlr_val_history"] = [dict(h) for h in self.val_history]

    def _continue_epoch_order(self) -> None:
        """After a resume, rebuild the training iterator for the restored epoch, minus its batches
        already trained. Lightning creates the iterator before the sampler learns the restored
        epoch and does not skip batches of a plain loader, so a resumed run would otherwise
        see another epoch's order from its start (and no epoch-start hook runs for it)."""
        loader, trainer = self.trainer.train_dataloader, self.trainer
        sampler = getattr(loader, "sampler", None)
        if not isinstance(sampler, EpochSampler):
            return
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        sampler.set_epoch(self.current_epoch)
        sampler.skip_items = done * loader.batch_size if done < trainer.num_training_batches else 0
        iter(trainer.fit_loop._data_fetcher)  # private, but the one place the iterator lives

    @staticmethod
    def upgrade_state_dict(state_dict: dict) -> dict:
        """An older checkpoint's tensors under the names this version uses."""
        return FrozenInitReference.upgrade_state_dict(state_dict)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "state_dict" in checkpoint:  # Lightning loads the weights after this hook
            checkpoint["state_dict"] = self.upgrade_state_dict(checkpoint["state_dict"])
        self._best_restored = bool(checkpoint.get("vlr_best_restored", False))
        self.skipped_steps = int(checkpoint.get("vlr_skipped_steps", 0))
        self.val_history = [dict(h) for h in checkpoint.get("vlr_val_history", [])]
        if self._trainer is not None and self.trainer.state.fn == "fit":
            self._resume_pending = True
            if "vlr_torch_rng" in checkpoint:
                torch.set_rng_state(checkpoint["vlr_torch_rng"].cpu())

    def _restore_best_checkpoint(self) -> None:
        callback = self.trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback is not None else ""
        if not best:
            raise RuntimeError(
                f"objective.stage2_from=best: no best checkpoint exists at epoch {self.current_epoch}; "
                "stage 1 needs validation and a ModelCheckpoint (callbacks=default)"
            )
        state = torch.load(best, map_location=self.device, weights_only=True)["state_dict"]
        self.load_state_dict(state)
        log.info("stage 2 starts from the best stage-1 checkpoint %s", best)

    def _total_steps(self) -> int:
        trainer, datamodule = self.trainer, getattr(self.trainer, "datamodule", None)
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return trainer.max_steps
        if not hasattr(datamodule, "train_batches_per_epoch") or trainer.max_epochs is None or trainer.max_epochs < 0:
            return int(trainer.estimated_stepping_batches)
        per_epoch = datamodule.train_batches_per_epoch()
        if isinstance(trainer.limit_train_batches, int):
            per_epoch = min(per_epoch, trainer.limit_train_batches)
        elif trainer.limit_train_batches is not None and trainer.limit_train_batches < 1.0:
            per_epoch = int(per_epoch * trainer.limit_train_batches)
        return max(1, math.ceil(per_epoch / trainer.accumulate_grad_batches) * trainer.max_epochs)

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("model.optimizer is not set")
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]  # biases, norms, temperatures
        optimizer = self.optimizer_factory(params=[{"params": decay}, {"params": no_decay, "weight_decay": 0.0}])
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self._total_steps())
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- evaluation ---------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        split = {"fit": "val", "validate": "val", "test": "test"}.get(stage)
        datamodule = getattr(self.trainer, "datamodule", None)
        if split is None or not hasattr(datamodule, "eval_targets"):
            return  # fitting from bare dataloaders: no evaluation split to prepare
        for name in ("train", split) if stage == "fit" else (split,):
            self.reference.prepare(name, datamodule.split(name))
        if split in self.evaluators:
            return
        targets = datamodule.eval_targets(split)
        self.evaluators[split] = RetrievalEvaluator(
            **targets,
            ks=self.eval_ks,
            ndcg_ks=self.eval_ndcg_ks,
            overlap_ks=self.eval_overlap_ks,
            ties=self.eval_ties,
            save_rankings=self.save_rankings if stage != "fit" else 0,
        ).to(self.device)

    @torch.no_grad()
    def _eval_step(self, split: str, batch: dict) -> None:
        evaluator = self.evaluators[split]
        if "images" in batch:
            images = batch["images"]
            evaluator.update(
                image_emb=self.embed_images(images),
                image_idx=batch["image_idx"],
                image_ref=self.reference.embed("image", split, batch, cacheable=True),
            )
        else:
            ids, mask = batch["input_ids"], batch["attention_mask"]
            evaluator.update(
                text_emb=self.embed_texts(ids, mask),
                text_idx=batch["caption_idx"],
                text_ref=self.reference.embed("text", split, batch, cacheable=True),
            )

    def _log_evaluation(self, split: str) -> None:
        evaluator = self.evaluators[split]
        evaluator.allow_partial = self._loader_limited(split)
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
            bool(trainer.fast_dev_run)
            or bool(trainer.overfit_batches)
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
