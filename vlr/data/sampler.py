"""`EpochSampler`: the training order as a pure function of (seed, epoch), sharded over ranks, resumable.

Why not torch's samplers: ``RandomSampler`` draws its order from the global RNG when the
epoch starts, so a run resumed in the middle of an epoch cannot rebuild it, and
Lightning's distributed sampler always shuffles. Here the order is
``randperm(n, seed + epoch)`` (or ``arange`` without shuffle), padded to a multiple of the
world size and dealt out ``order[rank::world]`` like ``DistributedSampler``, so global
batch j holds the same items for 1 process and for N. Items are yielded as
``(index, epoch)`` so a dataset can seed its augmentation per item and epoch, away from
the global RNG that dropout draws from. ``skip_items`` (set when resuming) drops this
rank's first items of the next iteration only: the batches already trained.
Subclassing ``DistributedSampler`` keeps Lightning from replacing it under DDP.
"""

from __future__ import annotations

import torch
from torch.utils.data import DistributedSampler


class EpochSampler(DistributedSampler):
    def __init__(self, dataset, shuffle: bool, seed: int, num_replicas: int = 1, rank: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=False)
        self.skip_items = 0

    def order(self) -> list[int]:
        n = len(self.dataset)  # type: ignore[arg-type]  # vlr's datasets are sized
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(n))
        order += order[: self.total_size - n]  # pad so every rank gets as many items
        return order[self.rank : self.total_size : self.num_replicas]

    def __iter__(self):
        shard = self.order()
        skip, self.skip_items = self.skip_items, 0
        return iter([(i, self.epoch) for i in shard[skip:]])
