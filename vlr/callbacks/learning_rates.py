"""`LearningRateMonitor`: Lightning's, except that a run without loggers (``logger=none``) trains.

Lightning's refuses to start without a logger; the default callbacks include this one,
so ``logger=none`` would otherwise fail. With loggers it is Lightning's unchanged: the
learning rate of every parameter group (``lr-<optimizer>/decay``, ``.../no_decay``).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import LearningRateMonitor as _LightningLearningRateMonitor


class LearningRateMonitor(_LightningLearningRateMonitor):
    def on_train_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        self._no_logger = not trainer.loggers
        if not self._no_logger:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if not getattr(self, "_no_logger", False):
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        if not getattr(self, "_no_logger", False):
            super().on_train_epoch_start(trainer, *args, **kwargs)
