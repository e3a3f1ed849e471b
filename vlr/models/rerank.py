"""ITM re-ranking at evaluation: the token states of a split, and the pair scorer the evaluator calls.

`TokenStore` keeps each evaluated image's patch tokens and each caption's token states by
dataset index; `TokenStore.gathered` brings every rank's to every rank (padded to one length,
DistributedSampler's repeated items dropped, as the evaluator drops them from the embeddings).
`pair_scorer` returns the function `vlr.metrics.RetrievalEvaluator` calls with each query's
ITC top k: the queries are split into one contiguous block per rank, each rank runs the fusion
encoder on its block's pairs only, and the blocks' scores are gathered, so every rank ends with
the same [Q, k] scores as one process (the fusion forward is the whole cost of re-ranking).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vlr.models.itm import pad_tokens
from vlr.objectives.distributed import gather_no_grad, rank, world_size


def _gather_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` [n, ...] from every rank (rank order), ranks holding different n and, for token
    states, different sequence lengths (dim 1, zero-padded to the longest)."""
    if world_size() == 1:
        return x
    dims = gather_no_grad(torch.tensor([list(x.shape[:2]) + [0] * (2 - min(2, x.ndim))], device=x.device))
    rows, length = int(dims[:, 0].max()), int(dims[:, 1].max())
    if x.ndim >= 2:
        x = pad_tokens(x, length)
    padded = torch.cat([x, x.new_zeros((rows - x.shape[0], *x.shape[1:]))]) if x.shape[0] < rows else x
    parts = gather_no_grad(padded).split(rows)
    return torch.cat([part[: int(n)] for part, n in zip(parts, dims[:, 0], strict=True)])


def _unique(idx: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:
    order = torch.argsort(idx, stable=True)
    idx = idx[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return (idx[keep], *(v[order][keep] for v in values))


class TokenStore:
    """Token states of one evaluation pass, by dataset index."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.images: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.texts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def add_images(self, idx: torch.Tensor, tokens: torch.Tensor) -> None:
        self.images.append((idx.detach().long(), tokens.detach()))

    def add_texts(self, idx: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> None:
        self.texts.append((idx.detach().long(), tokens.detach(), mask.detach()))

    def gathered(self) -> dict[str, torch.Tensor]:
        """Every rank's tokens, one row per dataset index, sorted by index: ``image_idx``,
        ``image_tokens``, ``text_idx``, ``text_tokens``, ``text_mask``."""
        if not self.images or not self.texts:
            raise RuntimeError("re-ranking needs the token states of the split's images and captions; none were stored")
        length = max(t.shape[1] for _, t, _ in self.texts)
        image_idx = _gather_rows(torch.cat([i for i, _ in self.images]))
        image_tokens = _gather_rows(torch.cat([t for _, t in self.images]))
        text_idx = _gather_rows(torch.cat([i for i, _, _ in self.texts]))
        text_tokens = _gather_rows(torch.cat([pad_tokens(t, length) for _, t, _ in self.texts]))
        text_mask = _gather_rows(torch.cat([pad_tokens(m, length) for _, _, m in self.texts]))
        image_idx, image_tokens = _unique(image_idx, image_tokens)
        text_idx, text_tokens, text_mask = _unique(text_idx, text_tokens, text_mask)
        return {
            "image_idx": image_idx,
            "image_tokens": image_tokens,
            "text_idx": text_idx,
            "text_tokens": text_tokens,
            "text_mask": text_mask,
        }


def _positions(idx: torch.Tensor) -> torch.Tensor:
    """Dataset index -> row in ``idx`` (sorted, unique)."""
    out = torch.full((int(idx.max()) + 1,), -1, dtype=torch.long, device=idx.device)
    out[idx] = torch.arange(idx.numel(), device=idx.device)
    return out


def query_block(num_queries: int) -> slice:
    """This rank's contiguous block of the queries (the last rank's may be shorter or empty)."""
    per = math.ceil(num_queries / world_size())
    return slice(min(num_queries, rank() * per), min(num_queries, (rank() + 1) * per))


def pair_scorer(
    score_pairs: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: dict[str, torch.Tensor],
    batch_size: int = 256,
) -> Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The evaluator's pair scorer over ``tokens`` (`TokenStore.gathered`).

    ``score_pairs(text_tokens, text_mask, image_tokens) -> [n]`` scores n (caption, image)
    pairs (the fusion encoder's ITM log-odds); it is called with at most ``batch_size`` pairs."""
    image_pos, text_pos = _positions(tokens["image_idx"]), _positions(tokens["text_idx"])

    @torch.no_grad()
    def score(direction: str, queries: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        num_q, k = candidates.shape
        block = query_block(num_q)
        mine_q, mine_c = queries[block].to(image_pos.device), candidates[block].to(image_pos.device)
        if direction == "i2t":
            images, captions = mine_q[:, None].expand_as(mine_c).reshape(-1), mine_c.reshape(-1)
        else:
            captions, images = mine_q[:, None].expand_as(mine_c).reshape(-1), mine_c.reshape(-1)
        image_rows, text_rows = image_pos[images], text_pos[captions]
        out = []
        for start in range(0, image_rows.numel(), batch_size):
            i, t = image_rows[start : start + batch_size], text_rows[start : start + batch_size]
            out.append(score_pairs(tokens["text_tokens"][t], tokens["text_mask"][t], tokens["image_tokens"][i]).float())
        local = torch.cat(out) if out else torch.zeros(0, device=image_pos.device)
        local = local.view(-1, k)
        if world_size() == 1:
            return local
        per = math.ceil(num_q / world_size())
        padded = torch.cat([local, local.new_zeros(per - local.shape[0], k)])
        return gather_no_grad(padded)[:num_q]

    return score
