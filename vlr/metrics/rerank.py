"""Re-ranked cross-modal recall: ITC ranks the whole gallery, a pair scorer (ITM) re-orders its top k.

The re-ranked order of a query's gallery is: its ITC top k ordered by the pair scorer's score,
then every other item in ITC order. The best positive's rank keeps vlr's tie rules
(`vlr.metrics.ranking.BestPositiveRanks`): ties among re-scored candidates are ties of the
pair score, ties among the rest ties of the ITC score, and no candidate ties with an item
outside the top k (those all come first). The top k is the first k of a stable sort by ITC
score (ties at the boundary go to the lower gallery index), so every rank picks the same k.

With k = the gallery size and a scorer that returns the ITC score itself, this is the plain
ranking exactly (tested). Only i2t and t2i are re-ranked: the single-modal metrics have no
pair scorer and stay on the ITC embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vlr.metrics.ranking import TIE_TOLERANCE, BestPositiveRanks, padded_groups, query_chunks, rank_counters
from vlr.metrics.retrieval import _recall_summary, _rsum_part

PREFIX = "rerank"
"""Re-ranked metrics are ``{stage}/rerank/{i2t,t2i}/R@k``, ``.../medr``, ``.../meanr`` and
``{stage}/rerank/rsum``; the plain ones keep their names."""

PairScorer = Callable[[str, torch.Tensor], torch.Tensor]
"""``(direction, candidates [Q, k] gallery rows) -> scores [Q, k]`` for queries 0..Q-1, direction
``i2t`` (queries images, gallery captions) or ``t2i``."""


@torch.no_grad()
def top_k_candidates(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> torch.Tensor:
    """[Q, min(k, G)] gallery rows of each query's ITC top k, best first (a stable sort: among
    equal scores the lower index first)."""
    k = min(k, gallery.shape[0])
    out = torch.empty(queries.shape[0], k, dtype=torch.long, device=queries.device)
    for idx in query_chunks(queries.shape[0], gallery.shape[0]):
        idx = idx.to(queries.device)
        scores = queries[idx] @ gallery.T
        out[idx] = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return out


@torch.no_grad()
def candidate_itc(queries: torch.Tensor, gallery: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[Q, k] ITC scores of each query's candidates, a block of queries at a time (never a
    [Q, k, width] tensor)."""
    out = torch.empty(candidates.shape, dtype=queries.dtype, device=queries.device)
    for idx in query_chunks(queries.shape[0], gallery.shape[0]):
        idx = idx.to(queries.device)
        out[idx] = (queries[idx] @ gallery.T).gather(1, candidates[idx])
    return out


@torch.no_grad()
def reranked_best_positive_rank(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    positives: torch.Tensor,
    candidates: torch.Tensor,
    candidate_scores: torch.Tensor,
    tolerance: float = TIE_TOLERANCE,
) -> BestPositiveRanks:
    """Where each query's best positive lands in the re-ranked order (see the module docstring).

    ``positives`` [Q, P]: each query's positive gallery rows, -1 padded; ``candidates`` [Q, k]:
    its re-scored rows; ``candidate_scores`` [Q, k]: their pair scores. Scores within
    ``tolerance`` of the best positive's tie with it, as in the plain ranking
    (`vlr.metrics.ranking.TIE_TOLERANCE`)."""
    num_q, num_g = queries.shape[0], gallery.shape[0]
    dev = queries.device
    above, tied_neg, tied_pos, valid = rank_counters(num_q, dev)
    for idx in query_chunks(num_q, num_g):
        idx = idx.to(dev)
        rows = torch.arange(idx.numel(), device=dev)[:, None]
        itc = queries[idx] @ gallery.T
        pos = torch.zeros(idx.numel(), num_g, dtype=torch.bool, device=dev)
        cand_pos = positives[idx]
        pos[rows.expand_as(cand_pos)[cand_pos >= 0], cand_pos[cand_pos >= 0]] = True
        in_top = torch.zeros_like(pos)
        in_top[rows.expand_as(candidates[idx]), candidates[idx]] = True
        rescored = torch.full_like(itc, -math.inf)
        rescored[rows.expand_as(candidates[idx]), candidates[idx]] = candidate_scores[idx].to(itc.dtype)
        neg = ~pos
        # a positive among the candidates: the rank is decided by the pair scores of the candidates
        top_pos = pos & in_top
        best_top = rescored.masked_fill(~top_pos, -math.inf).amax(dim=1, keepdim=True)
        tied_top = (rescored - best_top).abs() <= tolerance
        a_above = ((rescored > best_top + tolerance) & in_top & neg).sum(1)
        a_tneg = (tied_top & in_top & neg).sum(1)
        a_tpos = (tied_top & top_pos).sum(1)
        # none: every candidate comes first, then the rest in ITC order
        best_itc = itc.masked_fill(~pos, -math.inf).amax(dim=1, keepdim=True)
        rest = ~in_top
        tied_rest = (itc - best_itc).abs() <= tolerance
        b_above = in_top.sum(1) + ((itc > best_itc + tolerance) & rest & neg).sum(1)
        b_tneg = (tied_rest & rest & neg).sum(1)
        b_tpos = (tied_rest & rest & pos).sum(1)
        found = top_pos.any(dim=1)
        ok = pos.any(dim=1)
        above[idx] = torch.where(found, a_above, b_above)
        tied_neg[idx] = torch.where(ok, torch.where(found, a_tneg, b_tneg), torch.zeros_like(a_tneg))
        tied_pos[idx] = torch.where(found, a_tpos, b_tpos)
        valid[idx] = ok
    return BestPositiveRanks(above, tied_neg, tied_pos.clamp_min(1), valid)


def reranked_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    k: int,
    score_pairs: PairScorer,
    ks=(1, 5, 10),
    ties: str = "expected",
    tolerance: float = TIE_TOLERANCE,
    itc_weight: float = 0.0,
) -> dict[str, float]:
    """i2t and t2i recall, medr, meanr and rsum after re-ranking each query's ITC top ``k`` with
    ``score_pairs``, keys prefixed ``rerank/`` (VSE's protocol otherwise: i2t's rank is its best
    caption's).

    ``itc_weight`` > 0 re-scores with the pair score plus that weight times the pair's ITC score,
    in the manner of BLIP's evaluation (which adds the ITC cosine to the ITM match logit);
    ALBEF's, X-VLM's and the SAD release's use the ITM score alone (weight 0)."""
    t2i = text_to_image.long().to(image_emb.device)
    text_emb = text_emb.to(image_emb.device, image_emb.dtype)
    captions_of = padded_groups(t2i, image_emb.shape[0])
    out: dict[str, float] = {}
    ranks = {}
    for direction, queries, gallery, positives in (
        ("i2t", image_emb, text_emb, captions_of),
        ("t2i", text_emb, image_emb, t2i[:, None]),
    ):
        candidates = top_k_candidates(queries, gallery, k)
        scores = score_pairs(direction, candidates)
        if scores.shape != candidates.shape:
            raise ValueError(
                f"the {direction} pair scorer returned shape {tuple(scores.shape)}, wanted {tuple(candidates.shape)}"
            )
        if itc_weight:
            scores = scores.to(queries.device, queries.dtype) + itc_weight * candidate_itc(queries, gallery, candidates)
        ranks[direction] = reranked_best_positive_rank(
            queries, gallery, positives, candidates, scores.to(queries.device), tolerance
        )
        out |= _recall_summary(f"{PREFIX}/{direction}", ranks[direction], ks, True, ties)
    out[f"{PREFIX}/rsum"] = _rsum_part(ranks["i2t"], ties) + _rsum_part(ranks["t2i"], ties)
    return out
