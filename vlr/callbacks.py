"""`LastCheckpoint`: ``last.ckpt`` at every epoch end, every N optimizer steps, and whenever
training stops (the last epoch, ``max_steps`` or ``max_time`` in the middle of an epoch, early
stopping, SIGTERM, Ctrl-C), for resuming.

Lightning's ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it saves a
top-k checkpoint, so after an epoch that was not the best, ``last.ckpt`` would be stale.
This callback owns ``last.ckpt``; ``ModelCheckpoint`` keeps ``best.ckpt``. It is a
``Checkpoint``, so Lightning runs it after the other callbacks (``ModelCheckpoint``
included, when listed after it): the state it saves has this epoch's best already recorded.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class LastCheckpoint(Checkpoint):
    def __init__(self, dirpath: str, every_n_steps: int = 0, filename: str = "last.ckpt"):
        if every_n_steps < 0:
            raise ValueError(f"callbacks.last_checkpoint.every_n_steps must be >= 0, got {every_n_steps}")
        self.path, self.every_n_steps = Path(dirpath) / filename, every_n_steps
        self._saved_step = -1

    def _save(self, trainer: pl.Trainer) -> None:
        if not trainer.sanity_checking:
            for logger in trainer.loggers:  # what the checkpoint covers is logged on disk with it
                logger.save()
            trainer.save_checkpoint(self.path, weights_only=False)  # the full state: a resume needs it

    def setup(self, trainer: pl.Trainer, pl_module, stage: str) -> None:
        """Remove temporary files a killed save of ours left (``.<name>.tmp<pid>``, see vlr.io)."""
        if stage == "fit" and trainer.is_global_zero and self.path.parent.is_dir():
            for leftover in self.path.parent.glob(".*.ckpt.tmp*"):
                leftover.unlink(missing_ok=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module) -> None:
        self._save(trainer)  # max_steps / max_time / early stopping can end training mid-epoch

    def on_exception(self, trainer: pl.Trainer, pl_module, exception: BaseException) -> None:
        # SIGTERM (and Ctrl-C, which vlr.train turns into the same request) stops Lightning
        # between two steps, so the state is whole; other errors may strike mid-step: the
        # previous last.ckpt is kept.
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._saved_step:
            self._saved_step = step  # once per optimizer step (gradient accumulation repeats the hook)
            self._save(trainer)

    def on_validation_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._save(trainer)  # after the epoch's validation (and ModelCheckpoint's best)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.enable_validation or trainer.check_val_every_n_epoch is None or (
            (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch
        ):
            self._save(trainer)  # no validation this epoch: save at its end
