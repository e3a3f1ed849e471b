"""`retrieval_metrics`: every retrieval number vlr reports, from embeddings.

Cross-modal numbers follow VSE-infinity's ``lib/evaluation.py`` (the reference the
papers compare against); single-modal recall and NDCG follow ``shared/DESIGN.md`` §3.
Scores are inner products of the embeddings as given: the caller normalises.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch

from vlr.errors import UserError
from vlr.metrics.ranking import (
    TIE_TOLERANCE,
    BestPositiveRanks,
    best_positive_rank,
    check_tie_tolerance,
    check_ties,
    ndcg,
    padded_groups,
)
from vlr.metrics.relevance.graded import GradedRelevance

Relevances = dict[str, GradedRelevance]


class NonFiniteEmbeddings(UserError, ValueError):
    """The embeddings to score hold a NaN or an infinity (a diverged model): one line, not a traceback."""


def _as_float(name: str, x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [items, dim], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten()[:5].tolist()
        raise NonFiniteEmbeddings(
            f"{name} has non-finite values (rows {bad}...): the model's outputs overflowed; lower the learning "
            "rate, or evaluate an earlier checkpoint"
        )
    return x


def _recall_summary(
    prefix: str, ranks: BestPositiveRanks, ks: Sequence[int], with_medr: bool, ties: str
) -> dict[str, float]:
    """R@k = 100 x mean probability that the best positive is in the top k. meanr is the mean
    expected rank + 1; medr is floor(median of the expected ranks) + 1 (VSE's formula applied
    to expected ranks: with no ties both are VSE's numbers)."""
    out = {f"{prefix}/R@{k}": float(100.0 * ranks.hit_probability(k, ties).mean()) for k in ks}
    if with_medr:
        r = ranks.rank(ties).cpu().numpy()
        out[f"{prefix}/medr"] = float(np.floor(np.median(r)) + 1)
        out[f"{prefix}/meanr"] = float(r.mean() + 1)
    return out


def _rsum_part(ranks: BestPositiveRanks, ties: str) -> float:
    """R@1 + R@5 + R@10 of one direction, whatever ``ks`` the caller asked to report."""
    return float(sum(100.0 * ranks.hit_probability(k, ties).mean() for k in (1, 5, 10)))


def _record(direction: str, ranks: BestPositiveRanks, ks: Sequence[int], ties: str, record: dict) -> None:
    """Per-query expected ranks and hit probabilities of every query; NaN for one with nothing to find."""
    nan = torch.full_like(ranks.rank(ties), float("nan"))
    record[f"{direction}/rank"] = torch.where(ranks.valid, ranks.rank(ties), nan)
    for k in sorted({*ks, 1, 5, 10}):
        record[f"{direction}/R@{k}"] = torch.where(ranks.valid, ranks.hit_probability(k, ties), nan)


def _single_modal(direction: str, ranks: BestPositiveRanks, ks, ties: str, out: dict, record: dict | None) -> None:
    """Recall of a single-modal direction over the queries that have something to find (into
    ``out``, and per query into ``record``)."""
    if record is not None:
        _record(direction, ranks, ks, ties, record)
    if ranks.valid.any():
        out |= _recall_summary(direction, ranks.select(ranks.valid), ks, False, ties)


def _validate(image_emb, text_emb, text_to_image, image_labels, relevance: Relevances, folds):
    num_images, num_texts = image_emb.shape[0], text_emb.shape[0]
    if image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            f"embedding dimensions differ: image_emb has dim {image_emb.shape[1]}, text_emb has dim {text_emb.shape[1]}"
        )
    if text_to_image.ndim != 1 or text_to_image.shape[0] != num_texts:
        raise ValueError(
            f"text_to_image must be 1-D with one entry per caption ({num_texts}), "
            f"got shape {tuple(text_to_image.shape)}"
        )
    bad = ((text_to_image < 0) | (text_to_image >= num_images)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        raise ValueError(
            f"text_to_image[{i}] = {int(text_to_image[i])} points to a missing image "
            f"(there are {num_images} images); {bad.numel()} caption(s) affected"
        )
    counts = torch.bincount(text_to_image, minlength=num_images)
    if (counts == 0).any():
        i = int((counts == 0).nonzero()[0])
        raise ValueError(f"image {i} has no caption in text_to_image; every image needs at least one")
    if folds < 1 or num_images % folds:
        raise ValueError(f"folds={folds} does not divide the {num_images} images into equal consecutive blocks")
    if image_labels is not None and image_labels.shape[0] != num_images:
        raise ValueError(f"image_labels has {image_labels.shape[0]} rows but there are {num_images} images")
    if image_labels is not None and image_labels.ndim not in (1, 2):
        raise ValueError(f"image_labels must be 1-D class ids or a 2-D multi-hot matrix, got {image_labels.ndim}-D")
    for graded in relevance.values():
        graded.check(num_texts, num_images)


def as_relevances(relevance) -> Relevances:
    """``relevance`` as ``{name: GradedRelevance}`` in the caller's order (the first is primary):
    a mapping or sequence of `GradedRelevance`, one of them, or a bare [num_captions, num_images]
    tensor (ROUGE-L's layout, named ``rouge_l``)."""
    if relevance is None:
        return {}
    if isinstance(relevance, GradedRelevance):
        return {relevance.name: relevance}
    if isinstance(relevance, torch.Tensor):
        return {"rouge_l": GradedRelevance("rouge_l", relevance, "caption")}
    items = list(relevance.values()) if isinstance(relevance, dict) else list(relevance)
    return {r.name: r for r in items}


def _graded_ndcg(image_emb, text_emb, t2i, relevance: GradedRelevance, ndcg_ks, ties, tol, out, record) -> None:
    """Every direction's NDCG under one graded relevance, keys ``{direction}/{name}_NDCG@k``.

    Single-modal (the papers' protocol): i2i, image i queries the other images; t2t, the first
    caption of each image queries all other captions. Graded cross-modal: i2t, each image
    queries all captions; t2i, the first caption of each image queries all images (the text
    queries of every NDCG are the first captions, as in the papers' t2t). Mixed (the SAD release's
    I2IT/T2IT): an image, or the first caption of an image, queries one gallery of every image
    and every caption, the query itself removed."""
    dev = image_emb.device
    num_images, num_texts = image_emb.shape[0], text_emb.shape[0]
    rel = relevance.to(dev)
    first = torch.full((num_images,), num_texts, dtype=torch.long, device=dev)
    first = first.scatter_reduce(0, t2i, torch.arange(num_texts, device=dev), reduce="amin")
    img_to_img, img_to_cap, cap_to_img, cap_to_cap = rel.gains(t2i, first)
    self_i = torch.arange(num_images, device=dev)
    no_self_i = torch.full((num_images,), num_texts, dtype=torch.long, device=dev)  # a column past the gallery
    no_self_i_t = torch.full((num_images,), num_images, dtype=torch.long, device=dev)  # likewise, for t2i
    nk = tuple(ndcg_ks)

    def padded(gains):  # one zero-gain column for the zero-embedding item the "self" index points at
        return lambda q: torch.cat([gains(q), torch.zeros(q.numel(), 1, device=dev)], dim=1)

    both = torch.cat([image_emb, text_emb])
    per_direction = {
        "i2i": ndcg(image_emb, image_emb, img_to_img, self_i, nk, ties, tol),
        "t2t": ndcg(text_emb[first], text_emb, lambda q: cap_to_cap(first[q]), first, nk, ties, tol),
        "i2t": ndcg(image_emb, torch.cat([text_emb, text_emb[:1] * 0]), padded(img_to_cap), no_self_i, nk, ties, tol),
        "t2i": ndcg(
            text_emb[first],
            torch.cat([image_emb, image_emb[:1] * 0]),
            padded(lambda q: cap_to_img(first[q])),
            no_self_i_t,
            nk,
            ties,
            tol,
        ),
        "i2x": ndcg(image_emb, both, lambda q: torch.cat([img_to_img(q), img_to_cap(q)], dim=1), self_i, nk, ties, tol),
        "t2x": ndcg(
            text_emb[first],
            both,
            lambda q: torch.cat([cap_to_img(first[q]), cap_to_cap(first[q])], dim=1),
            num_images + first,
            nk,
            ties,
            tol,
        ),
    }
    for direction, per_query in per_direction.items():
        for k in ndcg_ks:
            key = f"{direction}/{relevance.name}_NDCG@{k}"
            out[key] = float(100.0 * per_query[k].mean())
            if record is not None:
                record[key] = per_query[k]


def _single_split(
    image_emb, text_emb, t2i, image_labels, relevance, ks, ndcg_ks, ties, tol=TIE_TOLERANCE, record=None
) -> dict[str, float]:
    """Metrics of one gallery; ``record`` (a dict), when given, receives per-query tensors
    (``{direction}/R@k`` hit probabilities, ``{direction}/rank`` expected 0-based ranks,
    ``{direction}/NDCG@k``) in query order, for per-query files and paired bootstraps."""
    dev = image_emb.device
    num_images = image_emb.shape[0]
    out: dict[str, float] = {}

    # i2t: best rank among the image's captions; t2i: rank of the caption's image.
    captions_of = padded_groups(t2i, num_images)  # [num_images, max captions per image]
    i2t = best_positive_rank(image_emb, text_emb, captions_of, tolerance=tol)
    t2i_ranks = best_positive_rank(text_emb, image_emb, t2i[:, None], tolerance=tol)
    out |= _recall_summary("i2t", i2t, ks, True, ties)
    out |= _recall_summary("t2i", t2i_ranks, ks, True, ties)
    if record is not None:
        _record("i2t", i2t, ks, ties, record)
        _record("t2i", t2i_ranks, ks, ties, record)
    out["rsum"] = _rsum_part(i2t, ties) + _rsum_part(t2i_ranks, ties)

    # t2t: each caption queries the other captions; relevant = the other captions of its image.
    # Captions whose image has no other caption have nothing to find and are left out.
    self_t = torch.arange(text_emb.shape[0], device=dev)
    t2t = best_positive_rank(text_emb, text_emb, captions_of[t2i], self_index=self_t, tolerance=tol)
    _single_modal("t2t", t2t, ks, ties, out, record)

    if image_labels is not None:
        labels = image_labels.to(dev)
        if labels.ndim == 1:
            pos = lambda q: labels[q][:, None] == labels[None, :]  # noqa: E731
        else:
            lf = labels.to(torch.float32)
            pos = lambda q: (lf[q] @ lf.T) > 0  # noqa: E731
        self_i = torch.arange(num_images, device=dev)
        i2i = best_positive_rank(image_emb, image_emb, pos, self_index=self_i, tolerance=tol)
        _single_modal("i2i", i2i, ks, ties, out, record)

    for graded in relevance.values():
        _graded_ndcg(image_emb, text_emb, t2i, graded, sorted({*ndcg_ks, 10}), ties, tol, out, record)
    if relevance:  # i2i + t2t NDCG@10 under the primary (first) relevance
        primary = next(iter(relevance))
        out["rsum_single"] = out[f"i2i/{primary}_NDCG@10"] + out[f"t2t/{primary}_NDCG@10"]
        for k in {10} - set(ndcg_ks):  # computed for rsum_single, not asked for
            for direction in ("i2i", "t2t", "i2t", "t2i", "i2x", "t2x"):
                for name in relevance:
                    out.pop(f"{direction}/{name}_NDCG@{k}")
                    if record is not None:
                        record.pop(f"{direction}/{name}_NDCG@{k}")
    return out


@torch.no_grad()
def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    image_labels: torch.Tensor | None = None,
    folds: int = 1,
    ks: Sequence[int] = (1, 5, 10),
    relevance=None,
    ndcg_ks: Sequence[int] = (10, 20, 50),
    ties: str = "expected",
    tie_tolerance: float = TIE_TOLERANCE,
    record: dict | None = None,
) -> dict[str, float]:
    """Cross-modal and single-modal retrieval metrics.

    Args:
        image_emb: [num_images, d] image embeddings (one per unique image).
        text_emb: [num_captions, d] caption embeddings.
        text_to_image: [num_captions] index of each caption's image; any number of captions per image.
        image_labels: 1-D class ids (same class = relevant) or 2-D boolean multi-hot
            (sharing any label = relevant) for i2i recall.
        folds: 5 gives the COCO 1K protocol: consecutive image blocks, captions follow
            their image, every metric is the mean over folds.
        ks: recall cut-offs.
        relevance: graded relevances (`vlr.metrics.relevance`), ``{name: GradedRelevance}`` or
            a sequence of them, the first primary; a bare [num_captions, num_images] tensor is
            ROUGE-L's layout and is named ``rouge_l``.
        ndcg_ks: NDCG cut-offs.
        ties: ``expected`` (default): every metric is its expected value when tied
            items are put in a uniformly random order, so a constant model scores
            chance; ``pessimistic`` (tied non-relevant items first) or ``optimistic``
            (last: what counting only strictly higher scores gives).
        tie_tolerance: scores within it are tied, so that rounding noise (which depends on the
            eval batch size and the number of ranks) never decides a rank
            (`vlr.metrics.ranking.TIE_TOLERANCE`).
        record: a dict that receives per-query tensors of the whole gallery (``folds=1``
            only): ``{direction}/rank``, ``{direction}/R@k``, ``{direction}/{relevance}_NDCG@k``.

    Keys: ``{i2t,t2i}/R@k``, ``{i2t,t2i}/{medr,meanr}``, ``rsum``, ``t2t/R@k``,
    ``i2i/R@k`` (with labels); per relevance ``{direction}/{name}_NDCG@k`` for direction in
    i2i, t2t (the papers' single-modal protocol), i2t, t2i (graded cross-modal; text queries are
    each image's first caption, as for t2t) and i2x, t2x
    (mixed retrieval: an image, or the first caption of an image, queries one gallery of all
    images and all captions, the query itself removed; the SAD release keeps it in its
    gallery); with a relevance, ``rsum_single`` = i2i + t2t ``{primary}_NDCG@10``.
    """
    image_emb = _as_float("image_emb", image_emb)
    text_emb = _as_float("text_emb", text_emb).to(image_emb.device, image_emb.dtype)
    t2i = torch.as_tensor(text_to_image).long().to(image_emb.device)
    labels = None if image_labels is None else torch.as_tensor(image_labels)
    if labels is not None and labels.ndim == 2:
        labels = labels.bool()
    rel = as_relevances(relevance)
    _validate(image_emb, text_emb, t2i, labels, rel, folds)
    check_ties(ties)
    tol = check_tie_tolerance(tie_tolerance)

    if folds == 1:
        return _single_split(image_emb, text_emb, t2i, labels, rel, ks, ndcg_ks, ties, tol, record)

    block = image_emb.shape[0] // folds
    per_fold: dict[str, list[float]] = defaultdict(list)
    for f in range(folds):
        lo, hi = f * block, (f + 1) * block
        cap = ((t2i >= lo) & (t2i < hi)).nonzero().flatten()
        fold = _single_split(
            image_emb[lo:hi],
            text_emb[cap],
            t2i[cap] - lo,
            None if labels is None else labels[lo:hi],
            {name: r.restrict(cap, torch.arange(lo, hi, device=cap.device)) for name, r in rel.items()},
            ks,
            ndcg_ks,
            ties,
            tol,
        )
        for key, value in fold.items():
            per_fold[key].append(value)
    return {key: float(np.mean(values)) for key, values in per_fold.items()}
