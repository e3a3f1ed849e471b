"""`ObjectiveSchedule`: the objective's epoch schedule, acted on by the loop.

It tells the objective the epoch (SAD's stages, triplet's warm-up), also for an epoch
resumed in its middle (Lightning runs no epoch-start hook then); for a two-stage objective
it refuses a schedule that cannot work, restores the best stage-1 checkpoint when stage 2
starts, and makes checkpoint selection start over with stage 2. Its state (whether stage 2
has started) travels in checkpoints. `RetrievalModule.configure_callbacks` adds it to every run.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from vlr.errors import ConfigError

log = logging.getLogger(__name__)


def forget_best(callback: ModelCheckpoint) -> None:
    """A ModelCheckpoint that starts choosing its best over (best.ckpt is overwritten at the
    next validation): what stage 2 does, as the release's separate stage-2 run. Through the
    callback's own ``load_state_dict``: its state with no best recorded yet."""
    worst = torch.tensor(float("inf") if callback.mode == "min" else -float("inf"))
    nothing_yet: dict[str, Any] = {"best_model_score": None, "best_model_path": "", "kth_value": worst}
    callback.load_state_dict({**callback.state_dict(), **nothing_yet, "best_k_models": {}, "kth_best_model_path": ""})


class ObjectiveSchedule(Callback):
    def __init__(self):
        self.stage2_started = False

    def state_dict(self) -> dict:
        return {"stage2_started": self.stage2_started}

    def load_state_dict(self, state_dict: dict) -> None:
        self.stage2_started = bool(state_dict.get("stage2_started", False))

    def on_fit_start(self, trainer: pl.Trainer, pl_module) -> None:
        stages = pl_module.objective.stages(trainer.max_epochs)
        if stages is not None:
            check_stages(trainer, stages)

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        # Lightning runs no epoch-start hook for an epoch resumed in its middle
        pl_module.objective.set_epoch(trainer.current_epoch, trainer.max_epochs)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module) -> None:
        objective, epoch = pl_module.objective, trainer.current_epoch
        objective.set_epoch(epoch, trainer.max_epochs)
        stages = objective.stages(trainer.max_epochs)
        if stages is None or epoch < stages.stage2_epoch or self.stage2_started:
            return
        if stages.from_best:
            restore_best(trainer, pl_module)
        if isinstance(trainer.checkpoint_callback, ModelCheckpoint):
            forget_best(trainer.checkpoint_callback)
        self.stage2_started = True


def check_stages(trainer: pl.Trainer, stages) -> None:
    """A two-stage objective (SAD) needs a stage 2 to reach and, restoring the best stage-1
    checkpoint, validation and a monitoring ModelCheckpoint in stage 1: refused before any
    step, in one line, rather than failing (or restoring an arbitrary checkpoint) later."""
    start = stages.stage2_epoch
    if trainer.max_epochs is not None and 0 <= trainer.max_epochs <= start:
        raise ConfigError(
            f"objective.stage1_epochs={start} but trainer.max_epochs={trainer.max_epochs}: stage 2 would "
            "never run; lower objective.stage1_epochs or raise trainer.max_epochs"
        )
    if not stages.from_best:
        return
    callback = trainer.checkpoint_callback
    if not isinstance(callback, ModelCheckpoint) or not callback.monitor:
        raise ConfigError(
            "objective.stage2_from=best needs a ModelCheckpoint that monitors a val metric (callbacks=default); "
            "or set objective.stage2_from=last"
        )
    if trainer.limit_val_batches == 0 or (trainer.check_val_every_n_epoch or 1) > start:
        raise ConfigError(
            f"objective.stage2_from=best: stage 1 ({start} epochs) is never validated "
            f"(trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch}, "
            f"trainer.limit_val_batches={trainer.limit_val_batches}); or set objective.stage2_from=last"
        )


def restore_best(trainer: pl.Trainer, pl_module) -> None:
    """Load the best checkpoint so far into the module (its weights; the optimizer continues)."""
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") if trainer.checkpoint_callback else ""
    if not best:
        raise RuntimeError(
            f"objective.stage2_from=best: no best checkpoint exists at epoch {trainer.current_epoch}; "
            "stage 1 needs validation and a ModelCheckpoint (callbacks=default)"
        )
    state = torch.load(best, map_location=pl_module.device, weights_only=True)["state_dict"]
    pl_module.load_state_dict(state)
    log.info("stage 2 starts from the best stage-1 checkpoint %s", best)
