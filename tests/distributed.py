"""Several DDP ranks simulated one after another in this process, for exactness tests of what
crosses ranks (the objectives' gathers, the evaluator's sync) without starting processes.

Collectives are matched by call order, as gloo and NCCL match them: the k-th collective of one
rank meets the k-th of every other. The ranks run in turn, so the inputs of ranks that have not
run yet in this pass come from the previous pass (in the first, a copy of the rank's own); passes repeat until every
rank sent the same inputs to every collective as in the previous pass. That is a fixed point: each
rank then computed exactly what it would have computed with the others running beside it. It takes
one pass per level of dependence between collectives, plus one (3 for a gather and its gradient).

`simulated_world` installs it where vlr's objectives talk to other ranks
(`vlr.objectives.distributed`'s ``dist``); `synced` gives a torchmetrics metric its ranks' states.
No thread, no process group: a test that needs a real one is the single DDP run of
`tests/test_ddp_exactness.py`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class SimulatedWorld:
    """``world_size`` ranks; `run` calls ``fn(rank)`` for each until the collectives agree. Its
    ``all_gather``/``all_reduce`` (sum)/``get_rank``/``get_world_size`` stand in for
    ``torch.distributed``'s."""

    def __init__(self, world_size: int, max_passes: int = 10):
        self.world_size, self.max_passes = world_size, max_passes
        self.rank = 0
        self._sent: list[list[torch.Tensor]] = [[] for _ in range(world_size)]
        self._previous: list[list[torch.Tensor]] | None = None
        self.passes = 0

    # -- the torch.distributed surface vlr uses ----------------------------------------------
    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def get_world_size(self, group=None) -> int:
        return self.world_size

    def get_rank(self, group=None) -> int:
        return self.rank

    def _inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's input to this collective (this rank's own ``x``), recording ``x``."""
        k = len(self._sent[self.rank])
        self._sent[self.rank].append(x.detach().clone())
        out = []
        for q in range(self.world_size):
            if q == self.rank:
                out.append(x.detach())
            elif self._previous is not None and k < len(self._previous[q]):
                out.append(self._previous[q][k])
            else:  # not known yet: this rank's own, a stand-in of the right shape
                out.append(x.detach())
        return out

    def all_gather(self, parts: list[torch.Tensor], x: torch.Tensor, group=None, async_op=False) -> None:
        for part, value in zip(parts, self._inputs(x), strict=True):
            part.copy_(value)

    def all_reduce(self, x: torch.Tensor, op=None, group=None, async_op=False) -> None:
        assert op is None or op == torch.distributed.ReduceOp.SUM, op
        x.copy_(torch.stack(self._inputs(x)).sum(0))

    # -- running the ranks ---------------------------------------------------------------------
    def run(self, fn: Callable[[int], object]) -> list:
        """``[fn(0), ..., fn(world_size - 1)]`` as the ranks of one job would return them."""
        for passes in range(1, self.max_passes + 1):
            self.passes = passes
            self._sent = [[] for _ in range(self.world_size)]
            results = []
            for rank in range(self.world_size):
                self.rank = rank
                results.append(fn(rank))
            if self._previous is not None and _same(self._sent, self._previous):
                return results
            self._previous = self._sent
        raise AssertionError(f"the ranks' collectives did not agree after {self.max_passes} passes")


def _same(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> bool:
    return all(
        len(x) == len(y) and all(s.shape == t.shape and torch.equal(s, t) for s, t in zip(x, y, strict=True))
        for x, y in zip(a, b, strict=True)
    )


def simulated_world(monkeypatch, world_size: int) -> SimulatedWorld:
    """A `SimulatedWorld` that vlr's objectives see as ``torch.distributed`` (its world size,
    rank, all_gather and all_reduce) for the rest of the test."""
    from vlr.objectives import distributed

    world = SimulatedWorld(world_size)
    monkeypatch.setattr(distributed, "dist", world)
    return world


def synced(metrics: list) -> None:
    """Make each of ``metrics`` (one torchmetrics `Metric` per rank, each updated with its rank's
    shard) compute over every rank's states, as DDP's sync before ``compute`` does: each rank's
    states are recorded from a deep copy, then each metric's gather returns them in rank order."""
    import copy

    sent: list[list[torch.Tensor]] = []
    for metric in metrics:
        mine: list[torch.Tensor] = []

        def record(x, group=None, mine=mine):
            mine.append(x.clone())
            return [x]

        copy.deepcopy(metric).sync(dist_sync_fn=record, distributed_available=lambda: True)
        sent.append(mine)
    for metric in metrics:
        calls = iter(range(len(sent[0])))

        def gather(x, group=None, calls=calls):
            k = next(calls)
            return [rank_sent[k] for rank_sent in sent]

        metric.dist_sync_fn, metric.distributed_available_fn = gather, lambda: True
