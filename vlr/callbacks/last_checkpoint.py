"""`LastCheckpoint`: ``last.ckpt`` at every epoch end, every N optimizer steps, and whenever
training stops (the last epoch, ``max_steps`` or ``max_time`` in the middle of an epoch, early
stopping, SIGTERM, Ctrl-C), for resuming.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it saves a
top-k checkpoint, so after an epoch that was not the best, ``last.ckpt`` would be stale.
This callback owns ``last.ckpt``; ``ModelCheckpoint`` keeps ``best.ckpt``. It is a
``Checkpoint``, so Lightning runs it after the other callbacks (and after ``ModelCheckpoint``
when listed after it, as in vlr/conf/callbacks/default.yaml): the state it saves has this
epoch's best already recorded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vlr.io import atomic_write
from vlr.runs.checkpoints import stamp, verify_checksum
from vlr.runs.finite import NonFiniteError, describe, nonfinite_state


class LastCheckpoint(Checkpoint):
    def __init__(self, dirpath: str, every_n_steps: int = 0, filename: str = "last.ckpt"):
        if every_n_steps < 0:
            raise ValueError(f"callbacks.last_checkpoint.every_n_steps must be >= 0, got {every_n_steps}")
        self.path, self.every_n_steps = Path(dirpath) / filename, every_n_steps
        self._saved_step = -1
        self._epoch_ended = False  # the last training batch of the epoch has run

    def _check_finite(self, trainer: pl.Trainer) -> None:
        """Non-finite weights end the run in one line: never saved (a resume would continue from
        them in vain), never validated (best.ckpt and the val history would hold them)."""
        broken = nonfinite_state(trainer.lightning_module)
        if broken:
            raise NonFiniteError(
                f"the parameters are non-finite after step {trainer.global_step} ({describe(broken)}); "
                f"{self.path} keeps the last finite state"
            )

    def on_validation_start(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._check_finite(trainer)

    def _save(self, trainer: pl.Trainer) -> None:
        if not trainer.sanity_checking:
            self._check_finite(trainer)
            for logger in trainer.loggers:  # what the checkpoint covers is logged on disk with it
                logger.save()
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state: a resume needs it
            self._saved_step = trainer.global_step

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        """Remove temporary files a killed save of ours left (``.<name>.tmp<pid>``, see vlr.io)."""
        if stage == "fit" and trainer.is_global_zero and self.path.parent.is_dir():
            for leftover in self.path.parent.glob(".*.ckpt.tmp*"):
                leftover.unlink(missing_ok=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module) -> None:
        """A run folder copied or moved elsewhere resumes with its own best checkpoint: Lightning's
        ``ModelCheckpoint`` restores ``best_model_path`` as the old folder's path (and warns that
        the dirpath changed), so a later test would load the old folder's file, or fail once it
        is gone; the same file in this folder's checkpoint directory replaces it."""
        for callback in trainer.checkpoint_callbacks:
            best, dirpath = getattr(callback, "best_model_path", ""), getattr(callback, "dirpath", None)
            if not best or not dirpath or Path(best).parent.resolve() == Path(dirpath).resolve():
                continue
            here = Path(dirpath) / Path(best).name
            if here.is_file():
                setattr(callback, "best_model_path", str(here))  # noqa: B010 -- ModelCheckpoint's public attribute

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        # max_time / early stopping can end training mid-epoch; a state saved at this step already
        # (the epoch's end, or max_steps in on_train_batch_end) is kept: here Lightning has
        # counted the interrupted epoch as complete, and a resume would skip its remaining batches
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # SIGTERM (and Ctrl-C, which vlr.train turns into the same request) stops Lightning
        # between two steps, so the state is whole; other errors may strike mid-step: the
        # previous last.ckpt is kept.
        # Stopped inside a validation, the loops' state says the epoch is done: a resume from it
        # would never validate that epoch (its val row and its best.ckpt candidate lost), so the
        # previous last.ckpt is kept and the resumed run trains and validates from there.
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit" and not trainer.validating:
            self._save(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # batch_idx counts the epoch's batches, those before a resume included (Lightning restores it)
        self._epoch_ended = batch_idx + 1 >= trainer.num_training_batches
        step = trainer.global_step
        periodic = self.every_n_steps and step % self.every_n_steps == 0
        if (periodic or 0 < trainer.max_steps <= step) and step != self._saved_step:
            self._save(trainer)  # once per optimizer step (gradient accumulation repeats the hook)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        # a validation inside the epoch (val_check_interval < 1): save after ModelCheckpoint's save
        # of it; at the epoch's end, on_train_epoch_end saves instead
        if trainer.state.fn == "fit" and not trainer.sanity_checking and not self._epoch_ended:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        interrupted, self._epoch_ended = not self._epoch_ended, False
        if interrupted and trainer.global_step == self._saved_step:
            # max_steps ended the epoch early and its state is saved (on_train_batch_end); here
            # Lightning has counted the epoch as done, and a resume would skip its other batches
            return
        # runs after ModelCheckpoint's on_train_epoch_end (Checkpoint callbacks keep their order
        # at the end of the list), where it records this epoch's best: a resume from this file
        # knows the best so far, and a kill between the two writes loses nothing but this one
        self._save(trainer)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that saves with `atomic_write` in the checkpoint's own folder,
    so ``last.ckpt`` and ``best.ckpt`` are never seen half-written, and a failed save stops
    the run at once naming the path and the reason. Every checkpoint it writes carries the
    vlr version, checkpoint format, the run's resolved configuration (``config``) and the
    checksum of its tensors (`vlr.runs.checkpoints.stamp`), weights-only ones too (Lightning
    skips the callbacks' ``on_save_checkpoint`` for those); every checkpoint Lightning loads
    through it (a resume, testing ``best.ckpt``) has its checksum verified."""

    def __init__(self, config: dict | None = None):
        super().__init__()
        self.config = config

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        stamped = stamp(checkpoint, self.config)
        atomic_write(path, lambda fh: torch.save(stamped, fh), "checkpoint")

    def load_checkpoint(
        self, path, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        verify_checksum(checkpoint, path)
        return checkpoint
