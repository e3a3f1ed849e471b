"""Train, then test the best checkpoint: ``python -m vlr.train [overrides]`` (or ``vlr-train``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from vlr.build import build_data_and_model
from vlr.reporting import print_metrics_table, stage_metrics, write_metrics
from vlr.runs import (
    pin_wandb_run,
    release_distributed,
    resume_checkpoint,
    share_run_dir_with_ddp_children,
    sweep_value,
)
from vlr.user_errors import report_user_errors

log = logging.getLogger(__name__)
# The frozen reference encoder is in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks/logger group."""
    if not group:
        return []
    return [hydra.utils.instantiate(node, _convert_="all") for node in group.values() if node and "_target_" in node]


def instantiate_trainer(cfg: DictConfig, model, **kwargs) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer``; vlr's own ``skip_nonfinite`` goes to the model."""
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    model.skip_nonfinite = bool(trainer_cfg.pop("skip_nonfinite", False))
    return hydra.utils.instantiate(trainer_cfg, logger=instantiate_group(cfg.get("logger")) or False, **kwargs)


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    pl.seed_everything(cfg.seed, workers=True)
    share_run_dir_with_ddp_children()
    pin_wandb_run(cfg)
    datamodule, model = build_data_and_model(cfg)
    trainer = instantiate_trainer(cfg, model, callbacks=instantiate_group(cfg.get("callbacks")))
    for logger in trainer.loggers:  # Lightning loggers write from rank 0 only
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg), weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}

    if cfg.get("test"):
        best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
        if not best:
            log.warning("no best checkpoint (was validation skipped?); testing the current weights")
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        test_metrics = stage_metrics(trainer.callback_metrics, "test")
        metrics.update(test_metrics)
        if trainer.is_global_zero:
            write_metrics(Path(cfg.paths.output_dir) / "metrics.json", test_metrics)
            print_metrics_table(test_metrics, f"test metrics ({cfg.objective.name} on {cfg.data.name})")
    return sweep_value(cfg, metrics), metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    try:
        value, _ = train(cfg)
    finally:
        release_distributed()
    return value


if __name__ == "__main__":
    main()
