"""`ProgressLog`: one plain line per epoch, for runs nobody watches on a terminal.

Lightning's progress bar redraws one line in place: under ``nohup``, SLURM or any redirect it
leaves nothing to follow until the run ends, and Hydra's ``train.log`` never sees it. A line
through the ``vlr`` logger goes to both the console and ``train.log`` (Hydra's job logging),
one per epoch, with what a person following the run asks: where it is, whether the loss falls,
whether validation improves, how long it has taken.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import timedelta

from lightning.pytorch.callbacks import Callback

log = logging.getLogger("vlr.progress")


def _number(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None or getattr(value, "numel", lambda: 1)() != 1:
        return "-"
    value = float(value)
    return f"{value:.4f}" if math.isfinite(value) and abs(value) < 100 else f"{value:.2f}"


def epoch_line(epoch: int, max_epochs: int, step: int, metrics: dict, elapsed_s: float, monitor: str) -> str:
    """``epoch 2/5  step 48  train/loss 1.2345  val/rsum 123.45  elapsed 0:01:07``."""
    total = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    return (
        f"epoch {epoch}{total}  step {step}  train/loss {_number(metrics, 'train/loss')}  "
        f"{monitor} {_number(metrics, monitor)}  elapsed {timedelta(seconds=round(elapsed_s))}"
    )


class ProgressLog(Callback):
    """Logs `epoch_line` at the end of every training epoch (after its validation), rank 0 only.
    ``monitor``: the validation metric shown (the checkpoint callback's by default)."""

    def __init__(self, monitor: str | None = None):
        self.monitor = monitor
        self._started = time.monotonic()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._started = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.sanity_checking:
            return
        monitor = self.monitor or getattr(trainer.checkpoint_callback, "monitor", None) or "val/rsum"
        metrics = dict(trainer.callback_metrics)
        line = epoch_line(
            trainer.current_epoch + 1,
            trainer.max_epochs or 0,
            trainer.global_step,
            metrics,
            time.monotonic() - self._started,
            monitor,
        )
        log.info(line)
