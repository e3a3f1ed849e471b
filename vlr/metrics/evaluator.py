"""`RetrievalEvaluator`: accumulate embeddings over batches and ranks, score once per evaluation.

Every stored embedding carries its dataset index. Under DDP, ``DistributedSampler``
pads the last batch by repeating items; gathering the indices with the
embeddings and keeping one row per index makes the result identical to a single
process, whatever the world size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vlr.metrics.overlap import neighbourhood_overlap
from vlr.metrics.ranking import TIE_TOLERANCE, check_tie_tolerance, check_ties, top_k_gallery
from vlr.metrics.rerank import reranked_metrics
from vlr.metrics.retrieval import as_relevances, retrieval_metrics


def _unique_by_index(emb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``emb`` ordered by dataset index, one per index (padding duplicates dropped),
    with their indices."""
    order = torch.argsort(idx, stable=True)
    idx, emb = idx[order], emb[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    return emb[keep], idx[keep]


def _check_complete(idx: torch.Tensor, expected: int, what: str) -> None:
    if idx.numel() != expected or (idx.numel() and (idx[0] != 0 or idx[-1] != expected - 1)):
        seen = set(idx.tolist())
        missing = [i for i in range(expected) if i not in seen][:10]
        raise RuntimeError(
            f"evaluation saw {idx.numel()} distinct {what} but the split has {expected}; "
            f"missing indices (first 10): {missing}. Was the {what} loader limited (limit_val_batches?)"
        )


class RetrievalEvaluator(Metric):
    """Cross-modal, single-modal and structure metrics over one evaluation split.

    Call ``update(image_emb=..., image_idx=...)`` for image batches and
    ``update(text_emb=..., text_idx=...)`` for caption batches (optionally with
    ``image_ref`` / ``text_ref``: reference embeddings for overlap@k), then ``compute()``.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(
        self,
        text_to_image: torch.Tensor | Sequence[int],
        *,
        image_labels: torch.Tensor | None = None,
        relevance=None,
        cxc=None,
        folds: int = 1,
        ks: Sequence[int] = (1, 5, 10),
        ndcg_ks: Sequence[int] = (10, 20, 50),
        overlap_ks: Sequence[int] = (10,),
        ties: str = "expected",
        tie_tolerance: float = TIE_TOLERANCE,
        tiers: dict[str, int] | None = None,
        save_rankings: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.ties = check_ties(ties)
        # scores this close are tied: rounding noise, which depends on the eval batch size and the
        # number of ranks, never decides a rank (vlr.metrics.ranking.TIE_TOLERANCE)
        self.tie_tolerance = check_tie_tolerance(tie_tolerance)
        # named gallery tiers scored from one embedding pass, e.g. COCO {5k: 1, 1k: 5}
        # (name -> folds); keys become ``<tier>/<metric>``. None: one unnamed tier of ``folds``.
        self.tiers = dict(tiers) if tiers else None
        # > 0: compute() also keeps per-query results and the top ``save_rankings`` gallery
        # indices of every direction in ``self.rankings`` (see vlr.tracking.reporting.write_rankings)
        self.save_rankings = int(save_rankings)
        self.rankings: dict[str, torch.Tensor] | None = None
        # True: a limited loader (fast_dev_run, limit_*_batches, debug presets) is scored over the
        # images it saw and their captions, with a warning; False: a partial split is an error
        self.allow_partial = False
        self.last_coverage: tuple[int, int, int, int] | None = None  # images, of, captions, of (partial only)
        self.text_to_image = torch.as_tensor(text_to_image).long().cpu()
        self.num_images = int(self.text_to_image.max()) + 1 if self.text_to_image.numel() else 0
        self.image_labels = image_labels
        # {name: GradedRelevance}, the primary first (vlr.metrics.relevance.build_relevance)
        self.relevance = as_relevances(relevance)
        # human ratings (vlr.metrics.relevance.cxc.CxCRatings): scored on the whole split only
        self.cxc = cxc
        self.folds, self.ks, self.ndcg_ks, self.overlap_ks = folds, tuple(ks), tuple(ndcg_ks), tuple(overlap_ks)
        # re-ranking (eval.rerank.k > 0, set by the module that owns the pair scorer): ITC's top
        # ``rerank_k`` of every i2t/t2i query re-scored by ``pair_scorer(direction, query dataset
        # indices [Q], candidate dataset indices [Q, k]) -> [Q, k]``; keys ``rerank/...``
        self.rerank_k = 0
        self.rerank_itc_weight = 0.0  # the re-ranking score: pair score + this x the ITC score
        self.pair_scorer: Callable[[str, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
        for name in ("image_emb", "image_idx", "image_ref", "text_emb", "text_idx", "text_ref"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        *,
        image_emb: torch.Tensor | None = None,
        image_idx: torch.Tensor | None = None,
        image_ref: torch.Tensor | None = None,
        text_emb: torch.Tensor | None = None,
        text_idx: torch.Tensor | None = None,
        text_ref: torch.Tensor | None = None,
    ) -> None:
        for kind, emb, idx, ref in (("image", image_emb, image_idx, image_ref), ("text", text_emb, text_idx, text_ref)):
            if emb is None:
                continue
            if idx is None or idx.shape[0] != emb.shape[0]:
                raise ValueError(f"{kind}_idx must give one dataset index per {kind}_emb row")
            getattr(self, f"{kind}_emb").append(emb.detach().float())
            getattr(self, f"{kind}_idx").append(idx.detach().long().to(emb.device))
            if ref is not None:
                getattr(self, f"{kind}_ref").append(ref.detach().float())

    def _collect(self, kind: str):
        embs = getattr(self, f"{kind}_emb")
        if isinstance(embs, list) and not embs:
            raise RuntimeError(f"RetrievalEvaluator.compute() called with no {kind} embeddings; call update() first")
        emb, idx = dim_zero_cat(embs), dim_zero_cat(getattr(self, f"{kind}_idx"))
        refs = getattr(self, f"{kind}_ref")
        ref = None if (isinstance(refs, list) and not refs) else dim_zero_cat(refs)
        if ref is not None and ref.shape[0] != emb.shape[0]:
            raise RuntimeError(f"{kind}_ref was given for some batches but not others")
        emb_u, idx_u = _unique_by_index(emb, idx)
        ref_u = None if ref is None else _unique_by_index(ref, idx)[0]
        return emb_u, ref_u, idx_u

    def _metrics(
        self, images: torch.Tensor, texts: torch.Tensor, record: dict | None = None, targets: dict | None = None
    ) -> dict[str, float]:
        """Every tier's metrics; ``record`` receives per-query results over the whole gallery.
        ``targets``: the split's ``text_to_image``, ``image_labels`` and ``relevance`` (default:
        the whole split's)."""
        targets = targets or {
            "text_to_image": self.text_to_image,
            "image_labels": self.image_labels,
            "relevance": self.relevance,
        }
        common = dict(
            image_labels=targets["image_labels"],
            ks=self.ks,
            relevance=targets["relevance"],
            ndcg_ks=self.ndcg_ks,
            ties=self.ties,
            tie_tolerance=self.tie_tolerance,
        )
        t2i = targets["text_to_image"].to(images.device)
        tiers = self.tiers or {"": self.folds}
        if record is not None and 1 not in tiers.values():
            retrieval_metrics(images, texts, t2i, record=record, **common)
        out: dict[str, float] = {}
        for name, folds in tiers.items():
            part = retrieval_metrics(images, texts, t2i, folds=folds, record=record if folds == 1 else None, **common)
            out |= {(f"{name}/{k}" if name else k): v for k, v in part.items()}
        return out

    def _seen_targets(self, image_idx: torch.Tensor, text_idx: torch.Tensor):
        """The split restricted to the seen images that have a seen caption, and those captions:
        (image rows to keep, caption rows to keep, targets with indices renumbered)."""
        device = image_idx.device
        t2i = self.text_to_image.to(device)
        seen = torch.zeros(self.num_images, dtype=torch.bool, device=device)
        seen[image_idx] = True
        keep_t = seen[t2i[text_idx]]
        with_caption = torch.zeros_like(seen)
        with_caption[t2i[text_idx[keep_t]]] = True
        keep_i = with_caption[image_idx]
        images, captions = image_idx[keep_i], text_idx[keep_t]
        position = torch.full((self.num_images,), -1, dtype=torch.long, device=device)
        position[images] = torch.arange(images.numel(), device=device)
        labels = None if self.image_labels is None else self.image_labels.to(device)[images]
        relevance = {name: r.restrict(captions, images) for name, r in self.relevance.items()}
        return (
            keep_i,
            keep_t,
            {"text_to_image": position[t2i[captions]], "image_labels": labels, "relevance": relevance},
        )

    def compute(self) -> dict[str, float]:
        images, image_ref, image_idx = self._collect("image")
        texts, text_ref, text_idx = self._collect("text")
        complete = image_idx.numel() == self.num_images and text_idx.numel() == self.text_to_image.numel()
        targets, self.last_coverage = None, None
        if not complete and self.allow_partial:
            keep_i, keep_t, targets = self._seen_targets(image_idx, text_idx)
            images, image_ref = images[keep_i], None if image_ref is None else image_ref[keep_i]
            texts, text_ref = texts[keep_t], None if text_ref is None else text_ref[keep_t]
            image_idx, text_idx = image_idx[keep_i], text_idx[keep_t]
            self.last_coverage = (images.shape[0], self.num_images, texts.shape[0], self.text_to_image.numel())
            if images.shape[0] < 2 or texts.shape[0] < 1:
                raise RuntimeError(
                    f"a limited evaluation saw {images.shape[0]} image(s) and {texts.shape[0]} of their "
                    "captions: too few to rank; let it see more batches"
                )
        else:
            _check_complete(image_idx, self.num_images, "images")
            _check_complete(text_idx, self.text_to_image.numel(), "texts")
        record: dict | None = {} if self.save_rankings and targets is None else None
        out = self._metrics(images, texts, record, targets)
        if self.rerank_k > 0:
            t2i = (targets or {"text_to_image": self.text_to_image})["text_to_image"]
            out |= self._reranked(images, texts, t2i, image_idx, text_idx)
        if record is not None:
            k, t2i = self.save_rankings, self.text_to_image.to(images.device)
            self_t, self_i = (
                torch.arange(texts.shape[0], device=texts.device),
                torch.arange(images.shape[0], device=images.device),
            )
            record["i2t/topk"] = top_k_gallery(images, texts, k)
            record["t2i/topk"] = top_k_gallery(texts, images, k)
            record["t2t/topk"] = top_k_gallery(texts, texts, k, self_t)
            record["i2i/topk"] = top_k_gallery(images, images, k, self_i)
            record["text_to_image"] = t2i
            self.rankings = {name: v.detach().cpu() for name, v in record.items()}
        for k in self.overlap_ks:
            if image_ref is not None:
                out[f"image/overlap@{k}"] = neighbourhood_overlap(images, image_ref, k, self.tie_tolerance)
            if text_ref is not None:
                out[f"text/overlap@{k}"] = neighbourhood_overlap(texts, text_ref, k, self.tie_tolerance)
        if self.cxc is not None and targets is None:
            out |= self.cxc.metrics(images, texts, self.ks, ties=self.ties, tolerance=self.tie_tolerance)
        return out

    def _reranked(self, images, texts, t2i, image_idx, text_idx) -> dict[str, float]:
        """``rerank/...`` metrics over the whole gallery (tiers and folds are not re-ranked)."""
        scorer = self.pair_scorer
        if scorer is None:
            raise RuntimeError("rerank_k > 0 but no pair_scorer was given to the evaluator")

        def score(direction: str, candidates: torch.Tensor) -> torch.Tensor:
            if direction == "i2t":
                return scorer(direction, image_idx, text_idx[candidates])
            return scorer(direction, text_idx, image_idx[candidates])

        return reranked_metrics(
            images, texts, t2i, self.rerank_k, score, self.ks, self.ties, self.tie_tolerance, self.rerank_itc_weight
        )

    @property
    def rerank_info(self) -> dict | None:
        """What evaluation.json says of re-ranking (None when off)."""
        if self.rerank_k <= 0:
            return None
        return {
            "k": self.rerank_k,
            "itc_weight": self.rerank_itc_weight,
            "metrics": "{stage}/rerank/{i2t,t2i}/R@k, medr, meanr and {stage}/rerank/rsum: ITC's top k re-scored "
            "by the ITM log-odds"
            + (" + itc_weight x the ITC score" if self.rerank_itc_weight else "")
            + "; the plain names are ITC alone",
            "single_modal": "i2i, t2t, NDCG, overlap and CxC metrics are on the ITC embeddings (never re-ranked)",
            "gallery": "the whole split (tiers and folds are not re-ranked)",
        }

    @property
    def primary_relevance(self) -> str | None:
        """The relevance ``rsum_single`` and the reports use: the first graded one."""
        return next(iter(self.relevance), None)

    def chance(self) -> dict[str, float]:
        """The metrics of a constant model on this split: chance level under the tie rule
        (with ``ties=expected`` every metric's value when the ranking is uniformly random)."""
        ones_i = torch.ones(self.num_images, 1)
        ones_t = torch.ones(self.text_to_image.numel(), 1)
        return self._metrics(ones_i, ones_t)
