"""Train, then test the best checkpoint: ``python -m vlr.train [overrides]`` (or ``vlr-train``)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from vlr.build import as_dict, build_data_and_model, trains_wordpiece
from vlr.callbacks import AtomicCheckpointIO
from vlr.errors import refuse_legacy_overrides, report_user_errors
from vlr.runs import (
    RUN_TOKENIZER_DIR,
    best_epoch_metrics,
    label_runs,
    pin_wandb_run,
    release_distributed,
    resume_checkpoint,
    share_run_dir_with_ddp_children,
    sweep_value,
)
from vlr.runs.checkpoints import check_state_fits, read_checkpoint
from vlr.tracking.loggers import ResumableCSVLogger, wandb_run_per_job
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
    # checkpoints are written atomically in their own folder (vlr.io), not through $TMPDIR
    plugins = trainer_cfg.pop("plugins", None) or [AtomicCheckpointIO()]
    if str(trainer_cfg.get("precision", "")).startswith("64"):
        # Lightning restores a checkpoint before its precision plugin converts the module, so a
        # float32 module would round float64 weights on load (a resumed or evaluated 64-true run
        # then differs from the original); converting first keeps every digit.
        model.double()
    return hydra.utils.instantiate(
        trainer_cfg, logger=instantiate_group(cfg.get("logger")) or False, plugins=plugins, **kwargs
    )


@contextlib.contextmanager
def stop_between_steps(trainer: pl.Trainer):
    """Ctrl-C asks Lightning to stop after the current step, as SIGTERM does (its SIGTERM
    handling raises ``SIGTERMException`` between steps, and `LastCheckpoint` saves then);
    a second Ctrl-C aborts at once, keeping the previous ``last.ckpt``."""
    requested: list[int] = []

    def on_sigint(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)
        trainer.vlr_stop_signal = "SIGINT"
        log.warning("Ctrl-C: stopping after this step and saving last.ckpt (press again to abort at once)")
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own SIGTERM handling: stop between steps

    previous = (
        signal.signal(signal.SIGINT, on_sigint) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def train(cfg: DictConfig) -> tuple[float | None, dict[str, float]]:
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    pl.seed_everything(cfg.seed, workers=True)
    share_run_dir_with_ddp_children()
    pin_wandb_run(cfg)
    label_runs(cfg)
    datamodule, model = build_data_and_model(cfg)
    trainer = instantiate_trainer(cfg, model, callbacks=instantiate_group(cfg.get("callbacks")))
    if trainer.is_global_zero and trains_wordpiece(cfg):
        # a WordPiece trained on this data's captions belongs to the weights: vlr.eval of this
        # run's checkpoints uses this copy, whatever data it evaluates on
        datamodule.tokenizer.save_pretrained(str(Path(cfg.paths.output_dir) / RUN_TOKENIZER_DIR))
    for logger in trainer.loggers:  # Lightning loggers write from rank 0 only
        logger.log_hyperparams(as_dict(cfg))

    ckpt_path = resume_checkpoint(cfg)
    if ckpt_path is not None:  # fail in one line, before any step, on a file that is not a checkpoint of this model
        option = "ckpt_path" if cfg.get("ckpt_path") else "resume (resume=false starts over)"
        checkpoint = read_checkpoint(ckpt_path, option)
        check_state_fits(model, checkpoint["state_dict"], ckpt_path, option)
        for logger in trainer.loggers:  # rows a killed run logged after its checkpoint are logged again
            if isinstance(logger, ResumableCSVLogger):
                logger.drop_rows_after(int(checkpoint.get("global_step", 0)))
        del checkpoint
    try:
        with stop_between_steps(trainer):
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        print(
            f"training stopped by a signal; {Path(cfg.paths.output_dir) / 'checkpoints' / 'last.ckpt'} holds "
            "the state: run the same command to resume",
            file=sys.stderr,
        )
        raise SystemExit(130 if getattr(trainer, "vlr_stop_signal", "") == "SIGINT" else 143) from None
    # selection is on val only: the sweep value and the reported val numbers are the best epoch's
    callback = trainer.checkpoint_callback
    monitor = getattr(callback, "monitor", None) or "val/rsum"
    best_val = best_epoch_metrics(model.selectable_val_history(), monitor, getattr(callback, "mode", "max"))
    metrics = {**{k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}, **best_val}
    boards = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
    if boards and best_val:  # TensorBoard's HParams tab: the run's value (the best epoch's, on val)
        with contextlib.suppress(KeyError):  # a bad optimized_metric fails at the end, as without TensorBoard
            value = sweep_value(cfg, metrics)
            for logger in boards:
                if value is not None:
                    logger.log_metrics({"hp_metric": value}, step=trainer.global_step)
    for logger in trainer.loggers:  # best-of-run summaries (W&B: the run summary shows the best epoch)
        if best_val and trainer.is_global_zero and hasattr(getattr(logger, "experiment", None), "summary"):
            run: Any = getattr(logger, "experiment")  # noqa: B009 -- W&B's run, checked above
            run.summary.update({f"best/{k}": v for k, v in best_val.items()})

    if cfg.get("test"):
        best = getattr(callback, "best_model_path", "") if callback else ""
        if not best:
            log.warning("no best checkpoint (was validation skipped?); testing the current weights")
        model.save_rankings = int(cfg.get("rankings_topk", 10)) if cfg.get("save_rankings") else 0
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        metrics.update(
            finish_evaluation(
                trainer,
                model,
                cfg,
                "test",
                f"test metrics ({cfg.objective.name} on {cfg.data.name})",
                meta={"checkpoint": best or "last weights"},
                extra=best_val,
            )
        )
    return sweep_value(cfg, metrics), metrics


@refuse_legacy_overrides
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
