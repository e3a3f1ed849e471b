"""Chunked, tie-aware ranking primitives shared by every retrieval metric.

Nothing here ever holds a full query x gallery score matrix: queries are scored in
chunks whose size keeps one chunk near ``CHUNK_ELEMENTS`` floats, so COCO-5K
(25k captions x 25k captions) stays within a few hundred MiB.

Ties. Equal scores are common (duplicated captions embed bit-identically; a collapsed
model scores everything equal), and counting only strictly higher scores hands every tie
to the query: a constant model would score R@K = 100. vlr's default, ``ties="expected"``,
reports the expected value of each metric when tied items are put in a uniformly random
order, so a constant model scores chance. ``"pessimistic"`` puts tied non-relevant items
first, ``"optimistic"`` last (the old behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from vlr.errors import ConfigError

CHUNK_ELEMENTS = 1 << 25  # ~128 MiB of float32 scores per chunk
TIE_RULES = ("expected", "pessimistic", "optimistic")
TIE_TOLERANCE = 1e-5  # scores this close are tied (see the module docstring)

PositiveFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps a chunk of query indices [q] to a boolean positive mask [q, num_gallery]."""


def check_ties(ties: str) -> str:
    if ties not in TIE_RULES:
        raise ValueError(f"evaluation.ties must be one of {TIE_RULES}, got '{ties}'")
    return ties


def check_tie_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float, or `ConfigError` naming the option when it is not in [0, 0.01]."""
    try:
        value = float(tolerance)
    except (TypeError, ValueError):
        raise ConfigError(f"model.evaluation.tie_tolerance must be a number, got {tolerance!r}") from None
    if not 0.0 <= value <= 0.01:  # NaN fails too; above 0.01 it would merge real differences
        raise ConfigError(
            f"model.evaluation.tie_tolerance must be in [0, 0.01] (a cosine difference), got {tolerance!r}"
        )
    return value


def query_chunks(num_queries: int, num_gallery: int):
    """Query index blocks whose score rows together hold about `CHUNK_ELEMENTS` scores."""
    step = max(1, min(num_queries, CHUNK_ELEMENTS // max(1, num_gallery)))
    for start in range(0, num_queries, step):
        yield torch.arange(start, min(start + step, num_queries))


def rank_counters(num_queries: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zeroed per-query counts of a best-positive rank (`BestPositiveRanks`' fields): items
    above, negatives and positives tied with it, and whether the query has a positive."""
    above, tied_neg, tied_pos = (torch.zeros(num_queries, dtype=torch.long, device=device) for _ in range(3))
    return above, tied_neg, tied_pos, torch.zeros(num_queries, dtype=torch.bool, device=device)


def padded_groups(group_of: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[num_groups, max_size] member indices of each group (e.g. the captions of each image), -1 padded."""
    order = torch.argsort(group_of, stable=True)
    counts = torch.bincount(group_of, minlength=num_groups)
    offsets = torch.cumsum(counts, 0) - counts
    sorted_groups = group_of[order]
    slot = torch.arange(group_of.numel(), device=group_of.device) - offsets[sorted_groups]
    out = torch.full(
        (num_groups, int(counts.max()) if counts.numel() else 0), -1, dtype=torch.long, device=group_of.device
    )
    out[sorted_groups, slot] = order
    return out


@dataclass
class BestPositiveRanks:
    """Where each query's best positive lands, ties included.

    ``above``: non-positive gallery items scoring strictly higher than the best positive;
    ``tied_negatives``: non-positives tied with it; ``tied_positives``: positives tied with
    it (at least 1 for a valid query). Under a uniformly random order of the tied items the
    number X of tied negatives ahead of the first tied positive is negative-hypergeometric:
    P(X >= j) = C(e, j) / C(e + p, j), E[X] = e / (p + 1). The 0-based rank is above + X.
    """

    above: torch.Tensor
    tied_negatives: torch.Tensor
    tied_positives: torch.Tensor
    valid: torch.Tensor

    def select(self, mask: torch.Tensor) -> BestPositiveRanks:
        return BestPositiveRanks(
            self.above[mask], self.tied_negatives[mask], self.tied_positives[mask], self.valid[mask]
        )

    def rank(self, ties: str) -> torch.Tensor:
        """Per-query 0-based rank (float64): expected, worst or best over tie orders."""
        g, e, p = (x.double() for x in (self.above, self.tied_negatives, self.tied_positives))
        if ties == "optimistic":
            return g
        if ties == "pessimistic":
            return g + e
        return g + e / (p + 1.0)

    def hit_probability(self, k: int, ties: str) -> torch.Tensor:
        """Per-query P(rank < k): 0/1 for the pessimistic and optimistic rules."""
        g, e, p = (x.double() for x in (self.above, self.tied_negatives, self.tied_positives))
        if ties != "expected":
            return (self.rank(ties) < k).double()
        j = k - g  # the rank is < k unless at least j tied negatives come first
        jj = j.clamp(min=0.0)
        ok = jj <= e
        # log C(e, j) - log C(e + p, j), only where 0 <= j <= e
        log_tail = (
            torch.lgamma(e + 1)
            - torch.lgamma((e - jj).clamp(min=0) + 1)
            - torch.lgamma(e + p + 1)
            + torch.lgamma(e + p - jj + 1)
        )
        tail = torch.where(ok, log_tail.exp(), torch.zeros_like(e))  # P(X >= j)
        out = 1.0 - tail
        return torch.where(j <= 0, torch.zeros_like(out), out)


def best_positive_rank(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: torch.Tensor | PositiveFn,
    self_index: torch.Tensor | None = None,
    tolerance: float = TIE_TOLERANCE,
) -> BestPositiveRanks:
    """Counts that place every query's best-ranked positive, ties included (`BestPositiveRanks`).

    Nothing is sorted: the best positive's score is compared with the row. ``positives`` is
    either a padded index tensor [num_queries, P] of each query's positive gallery items
    (-1 = padding; cheap when queries have few positives) or a function giving a boolean
    mask per chunk (for label-defined relevance). ``self_index[q]`` (if given) is the
    gallery item that *is* query q; it is removed from the gallery for that query.
    A query with no positive at all has ``valid`` False. Items within ``tolerance`` of the best
    positive's score are tied with it; only those more than ``tolerance`` above rank ahead.
    """
    num_q, num_g = queries.shape[0], gallery.shape[0]
    dev = queries.device
    above, tied_neg, tied_pos, valid = rank_counters(num_q, dev)
    for idx in query_chunks(num_q, num_g):
        idx = idx.to(dev)
        rows = torch.arange(idx.numel(), device=dev)
        scores = queries[idx] @ gallery.T
        if self_index is not None:
            scores[rows, self_index[idx]] = -math.inf
        if callable(positives):
            pos = positives(idx)
            if self_index is not None:
                pos[rows, self_index[idx]] = False
            best = scores.masked_fill(~pos, -math.inf).amax(dim=1)
            ok_rows = pos.any(dim=1)
            n_pos_tied = ((scores >= best[:, None] - tolerance) & pos).sum(dim=1, dtype=torch.int32).long()
        else:
            cand = positives[idx]
            ok = cand >= 0
            if self_index is not None:
                ok &= cand != self_index[idx][:, None]
            cand_scores = scores.gather(1, cand.clamp_min(0)).masked_fill(~ok, -math.inf)
            best = cand_scores.amax(dim=1)
            ok_rows = ok.any(dim=1)
            n_pos_tied = ((cand_scores >= best[:, None] - tolerance) & ok).sum(dim=1).long()
        # int32 accumulation: ~18x faster than summing a bool tensor into int64 on CPU
        n_above = (scores > best[:, None] + tolerance).sum(dim=1, dtype=torch.int32).long()
        window = (scores >= best[:, None] - tolerance) & (scores <= best[:, None] + tolerance)
        n_tied = window.sum(dim=1, dtype=torch.int32).long()
        above[idx], tied_pos[idx], valid[idx] = n_above, n_pos_tied, ok_rows
        tied_neg[idx] = torch.where(ok_rows, n_tied - n_pos_tied, torch.zeros_like(n_tied))
    return BestPositiveRanks(above, tied_neg, tied_pos.clamp_min(1), valid)


def tie_groups(sorted_scores: torch.Tensor, tolerance: float = TIE_TOLERANCE) -> torch.Tensor:
    """[q, m] tie-group id (0, 1, ...) of each position of rows sorted by decreasing score: a new
    group starts where the score drops by more than ``tolerance`` from the previous position
    (chained, so a run of neighbours each within ``tolerance`` of the next is one group)."""
    new_group = torch.ones_like(sorted_scores, dtype=torch.long)
    drop = sorted_scores[:, :-1] - sorted_scores[:, 1:]
    new_group[:, 1:] = (drop > tolerance).long()  # -inf - -inf is NaN: not a drop, one group
    return new_group.cumsum(dim=1) - 1


def tie_group_means(sorted_scores: torch.Tensor, sorted_gains: torch.Tensor, tolerance: float = TIE_TOLERANCE):
    """Per position of rows sorted by decreasing score, the mean gain of its tie group
    (McSherry & Najork 2008; groups as `tie_groups`). Exact for every group that ends inside the
    rows given; ``(means, group ids)``."""
    q, m = sorted_scores.shape
    group = tie_groups(sorted_scores, tolerance)
    sums = torch.zeros(q, m, dtype=sorted_gains.dtype, device=sorted_gains.device).scatter_add_(1, group, sorted_gains)
    counts = torch.zeros(q, m, dtype=sorted_gains.dtype, device=sorted_gains.device).scatter_add_(
        1, group, torch.ones_like(sorted_gains)
    )
    return (sums / counts.clamp_min(1)).gather(1, group), group


def _expected_gains(scores: torch.Tensor, g: torch.Tensor, m: int, tolerance: float) -> torch.Tensor:
    """[q, m] tie-group mean gains of the top m positions. A group that reaches the m-th place
    may go on below it: the top ``2m + 16`` are sorted, and the rare rows whose m-th place's
    group reaches the end of those are sorted whole."""
    n = scores.shape[1]
    fetch = min(n, 2 * m + 16)
    top_scores, top = scores.topk(fetch, dim=1)
    means, group = tie_group_means(top_scores, torch.gather(g, 1, top), tolerance)
    out = means[:, :m].clone()
    if fetch < n:
        open_ended = (group[:, m - 1] == group[:, -1]).nonzero().flatten()
        if open_ended.numel():
            whole, order = torch.sort(scores[open_ended], dim=1, descending=True, stable=True)
            out[open_ended] = tie_group_means(whole, torch.gather(g[open_ended], 1, order), tolerance)[0][:, :m]
    return out


def _ordered_gains(scores: torch.Tensor, g: torch.Tensor, m: int, ties: str, tolerance: float) -> torch.Tensor:
    """[q, m] gains of the top m positions: tie-group means (expected) or the worst/best order."""
    if ties == "expected":
        return _expected_gains(scores, g, m, tolerance)
    # tied items ordered by gain, ascending (pessimistic) or descending (optimistic): sorted by
    # score, then by gain within each tie group (two stable sorts)
    sorted_scores, order = torch.sort(scores, dim=1, descending=True, stable=True)
    gains, group = torch.gather(g, 1, order), tie_groups(sorted_scores, tolerance)
    by_gain = torch.sort(gains, dim=1, descending=ties == "optimistic", stable=True).indices
    by_group = torch.sort(torch.gather(group, 1, by_gain), dim=1, stable=True).indices
    return torch.gather(gains, 1, torch.gather(by_gain, 1, by_group[:, :m]))


def ndcg(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    gains: Callable[[torch.Tensor], torch.Tensor],
    self_index: torch.Tensor,
    ks: tuple[int, ...],
    ties: str = "expected",
    tolerance: float = TIE_TOLERANCE,
) -> dict[int, torch.Tensor]:
    """Per-query NDCG@k with graded gains, the query itself removed from the gallery.

    ``gains(idx)`` returns the [q, num_gallery] gain rows for a chunk of queries.
    DCG = sum over the top k of gain / log2(rank + 2) (rank 0-based); it is divided
    by the DCG of the row's own gains sorted in decreasing order. A query whose
    ideal DCG is 0 (no relevant item at all) scores 0. With ``ties="expected"`` each
    group of tied items contributes its mean gain at every position it spans (the
    expected DCG over random orders of the ties, McSherry & Najork 2008); scores less than
    ``tolerance`` apart are tied (`tie_groups`).
    """
    check_ties(ties)
    num_q, num_g = queries.shape[0], gallery.shape[0]
    k_max = min(max(ks), num_g - 1)
    out = {k: torch.empty(num_q, dtype=torch.float64, device=queries.device) for k in ks}
    discount = 1.0 / torch.log2(torch.arange(k_max, device=queries.device, dtype=torch.float64) + 2.0)
    for idx in query_chunks(num_q, num_g):
        idx = idx.to(queries.device)
        rows = torch.arange(idx.numel(), device=queries.device)
        scores = queries[idx] @ gallery.T
        scores[rows, self_index[idx]] = -math.inf
        g = gains(idx).to(torch.float64)
        g[rows, self_index[idx]] = 0.0
        got = _ordered_gains(scores, g, k_max, ties, tolerance) * discount
        ideal = g.topk(k_max, dim=1).values * discount
        for k in ks:
            kk = min(k, k_max)
            dcg = got[:, :kk].sum(dim=1)
            idcg = ideal[:, :kk].sum(dim=1)
            out[k][idx] = torch.where(idcg > 0, dcg / idcg.clamp_min(1e-12), torch.zeros_like(dcg))
    return out


def top_k_membership(scores: torch.Tensor, k: int, tolerance: float = TIE_TOLERANCE) -> torch.Tensor:
    """[q, n] probability that each item is among a row's top k under a random order of ties.

    Items more than ``tolerance`` above the k-th score are in (1); of the m items within
    ``tolerance`` of it, the k - c places left (c = items above) go to a uniformly random
    subset: each gets (k - c) / m.
    """
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth + tolerance
    tied = (scores >= kth - tolerance) & ~above
    left = (k - above.sum(dim=1, keepdim=True)).double()
    share = left / tied.sum(dim=1, keepdim=True).clamp_min(1).double()
    return above.double() + tied.double() * share


def expected_shared_neighbours(
    emb: torch.Tensor, reference_emb: torch.Tensor, k: int, tolerance: float = TIE_TOLERANCE
) -> torch.Tensor:
    """Per item, the expected number of its k nearest neighbours (itself excluded, ties broken
    at random independently in both spaces) that are also its k nearest under the reference."""
    n = emb.shape[0]
    k = min(k, n - 1)
    out = torch.empty(n, dtype=torch.float64, device=emb.device)
    for idx in query_chunks(n, n):
        idx = idx.to(emb.device)
        rows = torch.arange(idx.numel(), device=emb.device)
        a, b = emb[idx] @ emb.T, reference_emb[idx] @ reference_emb.T
        a[rows, idx] = -math.inf
        b[rows, idx] = -math.inf
        out[idx] = (top_k_membership(a, k, tolerance) * top_k_membership(b, k, tolerance)).sum(dim=1)
    return out


def top_k_gallery(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, self_index: torch.Tensor | None = None
) -> torch.Tensor:
    """[num_queries, k] gallery indices of each query's k highest scores, best first (the query
    itself removed when ``self_index`` is given). The order among exactly tied items is the
    one ``torch.topk`` returns: unspecified, like any tie."""
    num_q, num_g = queries.shape[0], gallery.shape[0]
    k = min(k, num_g - (self_index is not None))
    out = torch.empty(num_q, k, dtype=torch.long, device=queries.device)
    for idx in query_chunks(num_q, num_g):
        idx = idx.to(queries.device)
        scores = queries[idx] @ gallery.T
        if self_index is not None:
            scores[torch.arange(idx.numel(), device=queries.device), self_index[idx]] = -math.inf
        out[idx] = scores.topk(k, dim=1).indices
    return out
