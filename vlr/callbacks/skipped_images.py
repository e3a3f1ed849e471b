"""`SkippedImages`: how many training draws were replaced because their image could not be loaded.

Under ``data.on_bad_image=skip`` a training item whose image fails to decode is replaced by the
next loadable one (`vlr.data.datasets.TrainCaptions`). That happens inside loader workers, other
processes whose logs and counters the run never sees, so each batch carries its own count of
replaced draws (``batch["skipped_images"]``, one per item whose own image failed, summed by
`vlr.data.datasets.Collate`) and this callback adds them
up across steps and ranks. The total is ``data/skipped_images/train`` in ``metrics.json`` and the
W&B summary (`vlr.tracking.reporting.bad_sample_counts`): never a silent skip.

The count is a run's: its checkpoints keep the total so far (summed over ranks when saved, every
rank saves together), so a resumed run ends with the uninterrupted run's number.
`RetrievalModule.configure_callbacks` adds it to every run.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback

KEY = "skipped_images"


class SkippedImages(Callback):
    def __init__(self) -> None:
        self.before = 0  # the total of every rank until the checkpoint this run resumed from
        self.local = 0  # this rank's draws since then
        self.strategy = None
        self.total: int | None = None  # set when training ends (every rank), None before

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.strategy = trainer.strategy

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if isinstance(batch, dict) and KEY in batch:
            self.local += int(batch[KEY])

    def _summed(self) -> int:
        """``before`` plus every rank's ``local`` (a collective under DDP; integers, exact at any count)."""
        local = torch.tensor(self.local, dtype=torch.long)
        if self.strategy is not None and getattr(self.strategy, "world_size", 1) > 1:
            device = getattr(self.strategy, "root_device", local.device)  # NCCL reduces CUDA tensors only
            local = self.strategy.reduce(local.to(device), reduce_op="sum").cpu()
        return self.before + int(local)

    def on_fit_end(self, trainer, pl_module) -> None:
        # on every rank at the end of fit, also when a finished run is started again and
        # Lightning skips the loop (the total is then the checkpoint's)
        self.total = self._summed()

    def state_dict(self) -> dict:
        return {"total": self._summed()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before, self.local = int(state_dict.get("total", 0)), 0


def skipped_images(trainer) -> int | None:
    """The run's total once training ended; None for a run that did not train (``vlr.eval``)."""
    for callback in getattr(trainer, "callbacks", []):
        if isinstance(callback, SkippedImages):
            return callback.total
    return None
