"""Evaluate a checkpoint, or the towers as built: ``python -m vlr.eval [ckpt_path=...] [split=val]``.

- With ``ckpt_path``: the data, model, objective and imbalance default to those of the run
  that wrote the checkpoint (``<run dir>/.hydra/config.yaml``). A group chosen on the command
  line (``data=flickr30k``, ``model=...``) replaces the run's, so a COCO-trained checkpoint
  can be tested on Flickr30K; dotted overrides (``data.root=...``) apply on top. A checkpoint
  that cannot load into the chosen model stops with one line naming the mismatched tensors.
  Checkpoints are loaded with ``weights_only=True``.
- Without ``ckpt_path``: zero-shot, the towers as constructed (pretrained weights by name or
  from a local directory), e.g. ``python -m vlr.eval model=clip_vit_b32 data=flickr30k data.root=...``.

``save_rankings=true`` also writes ``rankings.safetensors`` (per-query ranks and top-k gallery
indices, see `vlr.tracking.reporting.write_rankings`) beside ``metrics.json``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vlr.build import as_dict, build_data_and_model, trains_wordpiece
from vlr.errors import UserError, report_user_errors
from vlr.io import atomic_write_text
from vlr.runs import RUN_TOKENIZER_DIR, label_runs
from vlr.runs.checkpoints import check_state_fits, read_checkpoint
from vlr.runs.folder import RunFolder
from vlr.runs.options import check_options, checked_command_line
from vlr.runs.run_log import accept_run_log, refuse_run_log
from vlr.tracking.loggers import wandb_run_per_job
from vlr.tracking.reporting import finish_evaluation
from vlr.train import instantiate_trainer

log = logging.getLogger(__name__)
RUN_GROUPS = ("data", "model", "objective", "imbalance", "reference", "relevance")


def adopt_run_config(cfg: DictConfig, ckpt: Path) -> None:
    """Take the run-defining groups from the training run, except those chosen on the command
    line (``data=...``), then re-apply the command line's dotted overrides of the adopted ones."""
    run_cfg_path = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if not run_cfg_path.exists():
        log.warning("no %s next to the checkpoint; using data/model/objective as composed here", run_cfg_path)
        return
    run_cfg = OmegaConf.load(run_cfg_path)
    if not isinstance(run_cfg, DictConfig):
        raise ValueError(f"{run_cfg_path}: not a run config (expected a mapping)")
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    given = {ov.key_or_group for ov in overrides}
    chosen = given & set(RUN_GROUPS)
    if "data" in chosen:  # other data: its preset's reference and relevance (or the ones chosen), not the run's
        chosen |= {"reference", "relevance"}
    adopted = [g for g in RUN_GROUPS if g in run_cfg and g not in chosen]
    with open_dict(cfg):
        for group in adopted:
            cfg[group] = run_cfg[group]
    for ov in overrides:
        key = ov.key_or_group
        if "." in key and key.split(".")[0] in adopted and not ov.is_delete():
            OmegaConf.update(cfg, key, ov.value(), force_add=True)
    if "seed" in run_cfg and "seed" not in given:
        with open_dict(cfg):  # the towers as built are the run's initial ones (random init: the reference)
            cfg.seed = run_cfg.seed
    run_tokenizer = run_cfg_path.parent.parent / RUN_TOKENIZER_DIR
    if trains_wordpiece(cfg) and (run_tokenizer / "tokenizer.json").is_file():
        with open_dict(cfg):  # the vocabulary the checkpoint's embeddings were trained with
            cfg.model.tokenizer.name_or_path = str(run_tokenizer)
    log.info(
        "groups from the training run %s: %s; chosen here: %s",
        run_cfg_path.parent.parent,
        adopted or "none",
        sorted(chosen) or "none",
    )


def run_overrides(ckpt: Path | None) -> list[str]:
    """The command-line overrides of the training run that wrote ``ckpt`` (its
    ``.hydra/overrides.yaml``), or [] (zero-shot, or no run folder beside the checkpoint)."""
    path = None if ckpt is None else ckpt.resolve().parent.parent / ".hydra" / "overrides.yaml"
    if path is None or not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


class EvalOutputIsARun(UserError, ValueError):
    """``vlr.eval`` was pointed at a training run's folder for its own output."""


def refuse_a_training_run_folder(cfg: DictConfig) -> None:
    """``vlr.eval`` writes its own folder: its ``metrics.json``, ``evaluation.json`` and config
    would replace a training run's. Refused in one line, Hydra's files of the run put back."""
    folder = RunFolder(cfg)
    held = folder.holds_run()
    if held:
        folder.restore_hydra_files()
        refuse_run_log()  # nor a line in its log (vlr.runs.run_log)
        raise EvalOutputIsARun(
            f"hydra.run.dir={folder.dir} is a training run's folder (it holds {', '.join(held)}); "
            "vlr.eval writes its metrics and config into its own folder: give another hydra.run.dir"
        )
    accept_run_log()  # eval.log is written from here on


def evaluate(cfg: DictConfig) -> dict[str, float]:
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got '{cfg.split}'")
    refuse_a_training_run_folder(cfg)
    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else None
    checkpoint = read_checkpoint(ckpt) if ckpt is not None else None
    if ckpt is not None and cfg.from_run:
        adopt_run_config(cfg, ckpt)
    check_options(cfg)  # every option's type and range (the run's adopted ones too), before any work
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # a refusal after it stays one line
    datamodule, model = build_data_and_model(cfg)
    if checkpoint is not None and ckpt is not None:
        check_state_fits(model, checkpoint["state_dict"], ckpt)
        del checkpoint
    else:
        log.info("no ckpt_path: evaluating the towers as built (zero-shot)")
    model.save_rankings = int(cfg.get("rankings_topk", 10)) if cfg.get("save_rankings") else 0
    label_runs(cfg, run_overrides(ckpt) if cfg.from_run else [])
    trainer = instantiate_trainer(cfg, model)
    if trainer.is_global_zero:  # what was evaluated (the run's groups): .hydra/config.yaml holds eval's own composition
        evaluated = OmegaConf.to_yaml(OmegaConf.create(as_dict(cfg)))
        atomic_write_text(Path(cfg.paths.output_dir) / "evaluated_config.yaml", evaluated, "evaluated config")
    for logger in trainer.loggers:  # the evaluated configuration, the run's groups included (rank 0 writes)
        logger.log_hyperparams(as_dict(cfg))
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(model, datamodule=datamodule, ckpt_path=None if ckpt is None else str(ckpt), verbose=False, weights_only=True)
    what = (
        f"{ckpt}"
        if ckpt is not None
        else f"{cfg.model.get('_target_', 'model').rsplit('.', 1)[-1]} as built (zero-shot)"
    )
    return finish_evaluation(
        trainer,
        model,
        cfg,
        cfg.split,
        f"{cfg.split} metrics of {what}",
        meta={"checkpoint": str(ckpt) if ckpt else "none (zero-shot)"},
    )


@checked_command_line("eval")
@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    with wandb_run_per_job():
        evaluate(cfg)


if __name__ == "__main__":
    main()
