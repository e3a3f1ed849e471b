"""Evaluate a checkpoint: ``python -m vlr.eval ckpt_path=outputs/.../checkpoints/best.ckpt [split=val]``.

The data, model and objective default to those of the run that wrote the checkpoint
(``<run dir>/.hydra/config.yaml``); command-line overrides of ``data.*``, ``model.*``
and ``objective.*`` still apply on top. Checkpoints are loaded with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from vlr.build import build_data_and_model
from vlr.reporting import print_metrics_table, stage_metrics, write_metrics
from vlr.train import instantiate_trainer
from vlr.user_errors import report_user_errors

log = logging.getLogger(__name__)
RUN_GROUPS = ("data", "model", "objective", "imbalance")


def adopt_run_config(cfg: DictConfig, ckpt: Path) -> None:
    """Replace the run-defining groups by the training run's, then re-apply CLI overrides of them."""
    run_cfg_path = ckpt.resolve().parent.parent / ".hydra" / "config.yaml"
    if not run_cfg_path.exists():
        log.warning("no %s next to the checkpoint; using data/model/objective as composed here", run_cfg_path)
        return
    run_cfg = OmegaConf.load(run_cfg_path)
    with open_dict(cfg):
        for group in RUN_GROUPS:
            if group in run_cfg:
                cfg[group] = run_cfg[group]
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    for ov in overrides:
        key = ov.key_or_group
        if "." in key and key.split(".")[0] in RUN_GROUPS and not ov.is_delete():
            OmegaConf.update(cfg, key, ov.value(), force_add=True)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    if cfg.split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got '{cfg.split}'")
    if cfg.from_run:
        adopt_run_config(cfg, ckpt)
    pl.seed_everything(cfg.seed, workers=True)
    datamodule, model = build_data_and_model(cfg)
    trainer = instantiate_trainer(cfg, model)
    run = trainer.test if cfg.split == "test" else trainer.validate
    run(model, datamodule=datamodule, ckpt_path=str(ckpt), verbose=False, weights_only=True)
    metrics = stage_metrics(trainer.callback_metrics, cfg.split)
    if trainer.is_global_zero:
        write_metrics(Path(cfg.paths.output_dir) / "metrics.json", metrics)
        print_metrics_table(metrics, f"{cfg.split} metrics of {ckpt}")
    return metrics


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
