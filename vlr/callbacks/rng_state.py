"""`TorchRNGState`: the global torch RNG continues where the checkpoint left it.

Dropout draws from it, so a resumed run matches an uninterrupted one bit for bit on CPU.
Under DDP every rank draws the same dropout masks' worth of numbers, so rank 0's state
serves all ranks. `RetrievalModule.configure_callbacks` adds it to every run.
"""

from __future__ import annotations

import torch
from lightning.pytorch.callbacks import Callback


class TorchRNGState(Callback):
    def state_dict(self) -> dict:
        return {"torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:  # Lightning calls it when fitting resumes only
        if "torch_rng" in state_dict:
            torch.set_rng_state(state_dict["torch_rng"].cpu())
