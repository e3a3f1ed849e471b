"""Train, then test the best checkpoint: ``python -m vlr.train [overrides]`` (or ``vlr-train``)."""

from __future__ import annotations

import logging

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from vlr.build import as_dict, build_data_and_model, trains_wordpiece
from vlr.callbacks import AtomicCheckpointIO
from vlr.errors import report_user_errors
from vlr.runs import Run, release_distributed
from vlr.runs.folder import resolved
from vlr.runs.options import check_options, checked_command_line
from vlr.tracking.console import plain_when_redirected
from vlr.tracking.loggers import wandb_run_per_job
from vlr.tracking.noise import silence_known_noise
from vlr.tracking.reporting import finish_evaluation

log = logging.getLogger(__name__)
silence_known_noise()


def instantiate_group(group: DictConfig | None) -> list:
    """Instantiate every ``_target_`` entry of a callbacks/logger group."""
    if not group:
        return []
    return [hydra.utils.instantiate(node, _convert_="all") for node in group.values() if node and "_target_" in node]


def instantiate_trainer(cfg: DictConfig, model, **kwargs) -> pl.Trainer:
    """The Lightning Trainer of ``cfg.trainer``; vlr's own ``skip_nonfinite`` goes to the model."""
    trainer_cfg = as_dict(cfg.trainer)
    model.nonfinite.skip = bool(trainer_cfg.pop("skip_nonfinite", False))
    model.nonfinite.watch(model)  # a skip never goes on over non-finite weights (or running statistics)
    # checkpoints are written atomically in their own folder (vlr.io), not through $TMPDIR
    # every checkpoint carries the run's resolved configuration and a checksum (vlr.runs.checkpoints)
    plugins = trainer_cfg.pop("plugins", None) or [AtomicCheckpointIO(config=resolved(cfg))]
    # output to a file (nohup, SLURM): ProgressLog's lines, no progress bar frames
    kwargs["callbacks"] = plain_when_redirected(trainer_cfg, kwargs.get("callbacks", []))
    if str(trainer_cfg.get("precision", "")).startswith("64"):
        # Lightning restores a checkpoint before its precision plugin converts the module, so a
        # float32 module would round float64 weights on load (a resumed or evaluated 64-true run
        # then differs from the original); converting first keeps every digit.
        model.double()
    return hydra.utils.instantiate(
        trainer_cfg, logger=instantiate_group(cfg.get("logger")) or False, plugins=plugins, **kwargs
    )


def final_test(cfg: DictConfig, trainer: pl.Trainer, model, datamodule, best_val: dict[str, float]) -> dict[str, float]:
    """Test the checkpoint selected on val (the current weights without one), write the report."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") if callback else ""
    if not best:
        log.warning("no best checkpoint (was validation skipped?); testing the current weights")
    model.save_rankings = int(cfg.get("rankings_topk", 10)) if cfg.get("save_rankings") else 0
    trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    return finish_evaluation(
        trainer,
        model,
        cfg,
        "test",
        f"test metrics ({cfg.objective.name} on {cfg.data.name})",
        meta={"checkpoint": best or "last weights"},
        extra=best_val,
    )


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    """Seed, build data and model, fit (resuming the run folder's last.ckpt), select the best
    epoch on val, test it; return the value a sweep optimises and every metric."""
    check_options(cfg)  # every option's type and range, before any work
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)  # a refusal after it stays one line
    run = Run(cfg)  # checked and locked; its name, W&B run id and DDP children settled before anything is built
    try:
        datamodule, model = build_data_and_model(cfg)
        trainer = instantiate_trainer(cfg, model, callbacks=instantiate_group(cfg.get("callbacks")))
        ckpt_path = run.start(trainer, model, tokenizer=datamodule.tokenizer if trains_wordpiece(cfg) else None)
        run.fit(trainer, model, datamodule, ckpt_path)
        best_val, metrics = run.best_epoch(trainer, model)
        if cfg.get("test"):
            metrics.update(final_test(cfg, trainer, model, datamodule, best_val))
        run.report_results(trainer)
        return run.sweep_value(metrics), metrics
    finally:
        run.close()


@checked_command_line("train")
@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> float | None:
    try:
        with wandb_run_per_job():
            value, _ = train(cfg)
    finally:
        release_distributed()
    return value


if __name__ == "__main__":
    main()
