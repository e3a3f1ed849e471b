"""`TorchRNGState`: every rank's torch RNG continues where the checkpoint left it.

Dropout draws from the global torch RNG (the CUDA one on a GPU), so a resumed run matches an
uninterrupted one bit for bit only if each rank gets its own state back. Under DDP the ranks'
streams differ (Lightning seeds each rank with ``seed + rank`` for workers, and each rank's
dropout masks cover its own samples), so rank 0's state does not serve the others: the states of
every rank are gathered into the checkpoint (``torch_rng_per_rank``, ``cuda_rng_per_rank``; rank 0
writes the file) and each rank restores its own. A checkpoint of another world size, or one that
holds rank 0's state only, restores that state on every rank, as before.
`RetrievalModule.configure_callbacks` adds it to every run.
"""

from __future__ import annotations

import logging

import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class TorchRNGState(Callback):
    def __init__(self) -> None:
        self.rank, self.world_size = 0, 1
        self.strategy = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.rank, self.world_size, self.strategy = trainer.global_rank, trainer.world_size, trainer.strategy

    def _cuda_device(self) -> torch.device | None:
        device = getattr(self.strategy, "root_device", None)
        return device if device is not None and device.type == "cuda" else None

    def _gathered(self, state: torch.Tensor) -> torch.Tensor:
        """[world_size, ...] every rank's ``state`` (a collective: every rank saves a checkpoint together)."""
        if self.world_size == 1 or self.strategy is None:
            return state[None]
        device = getattr(self.strategy, "root_device", state.device)  # NCCL gathers CUDA tensors only
        return self.strategy.all_gather(state.to(device)).reshape(self.world_size, -1).cpu()

    def state_dict(self) -> dict:
        cpu = torch.get_rng_state()
        state = {"torch_rng": cpu, "torch_rng_per_rank": self._gathered(cpu)}
        cuda = self._cuda_device()
        if cuda is not None:
            state["cuda_rng_per_rank"] = self._gathered(torch.cuda.get_rng_state(cuda))
        return state

    def _own(self, per_rank: torch.Tensor | None) -> torch.Tensor | None:
        if per_rank is None:
            return None
        if per_rank.shape[0] != self.world_size:
            log.warning(
                "the checkpoint holds the RNG states of %d ranks, this run has %d: every rank continues from rank "
                "0's (dropout will not repeat the uninterrupted run's draws)",
                per_rank.shape[0],
                self.world_size,
            )
            return per_rank[0]
        return per_rank[self.rank]

    def load_state_dict(self, state_dict: dict) -> None:  # Lightning calls it when fitting resumes only
        own = self._own(state_dict.get("torch_rng_per_rank"))
        if own is None:
            own = state_dict.get("torch_rng")
        if own is not None:
            torch.set_rng_state(own.cpu().to(torch.uint8).clone())  # its own storage: a row of the stack is a view
        cuda, cuda_own = self._cuda_device(), self._own(state_dict.get("cuda_rng_per_rank"))
        if cuda is not None and cuda_own is not None:
            torch.cuda.set_rng_state(cuda_own.cpu().to(torch.uint8).clone(), cuda)
