"""The one place that moves features between ranks. Every objective uses these."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _check_equal_rows(x: torch.Tensor) -> None:
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size())]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise RuntimeError(
            f"ranks hold different batch sizes {[int(s) for s in sizes]}; training loaders must use drop_last=True"
        )


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice.

    Each rank computes the same global-batch loss L, so this rank's slice receives
    world_size * dL/dx; DDP's gradient averaging divides by world_size again, leaving
    exactly the single-process gradient of L. (Implemented with all_reduce, which
    gloo supports, instead of reduce_scatter, which it does not.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.rows = rank(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def local_rows(rows: int) -> slice:
    """This rank's rows of a gathered batch whose ranks each held ``rows`` (rank order)."""
    return slice(rank() * rows, (rank() + 1) * rows)


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks (rank order), differentiably. Identity on one process."""
    if world_size() == 1:
        return x
    _check_equal_rows(x)
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks (rank order), without gradient. Identity on one process."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def average_gradients(grads: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Average gradients computed with ``torch.autograd.grad`` (which bypasses DDP's all-reduce)."""
    if world_size() == 1:
        return grads
    out: list[torch.Tensor | None] = []
    for g in grads:
        if g is None:
            out.append(None)
            continue
        g = g.contiguous().clone()
        dist.all_reduce(g)
        out.append(g / world_size())
    return out
