"""`RetrievalEvaluator`: accumulate embeddings over batches and ranks, score once per evaluation.

Every stored embedding carries its dataset index. Under DDP, ``DistributedSampler``
pads the last batch by repeating items; gathering the indices with the
embeddings and keeping one row per index makes the result identical to a single
process, whatever the world size.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from vlr.metrics.overlap import neighbourhood_overlap
from vlr.metrics.ranking import check_ties, top_k_gallery
from vlr.metrics.retrieval import retrieval_metrics


def _unique_by_index(emb: torch.Tensor, idx: torch.Tensor, expected: int, what: str) -> torch.Tensor:
    """Rows of ``emb`` ordered by dataset index, one per index (padding duplicates dropped)."""
    order = torch.argsort(idx, stable=True)
    idx, emb = idx[order], emb[order]
    keep = torch.ones_like(idx, dtype=torch.bool)
    keep[1:] = idx[1:] != idx[:-1]
    idx, emb = idx[keep], emb[keep]
    if idx.numel() != expected or (idx.numel() and (idx[0] != 0 or idx[-1] != expected - 1)):
        seen = set(idx.tolist())
        missing = [i for i in range(expected) if i not in seen][:10]
        raise RuntimeError(
            f"evaluation saw {idx.numel()} distinct {what} but the split has {expected}; "
            f"missing indices (first 10): {missing}. Was the {what} loader limited (limit_val_batches?)"
        )
    return emb


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
        relevance: torch.Tensor | None = None,
        folds: int = 1,
        ks: Sequence[int] = (1, 5, 10),
        ndcg_ks: Sequence[int] = (10, 20, 50),
        overlap_ks: Sequence[int] = (10,),
        ties: str = "expected",
        tiers: dict[str, int] | None = None,
        save_rankings: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.ties = check_ties(ties)
        # named gallery tiers scored from one embedding pass, e.g. COCO {5k: 1, 1k: 5}
        # (name -> folds); keys become ``<tier>/<metric>``. None: one unnamed tier of ``folds``.
        self.tiers = dict(tiers) if tiers else None
        # > 0: compute() also keeps per-query results and the top ``save_rankings`` gallery
        # indices of every direction in ``self.rankings`` (see vlr.reporting.write_rankings)
        self.save_rankings = int(save_rankings)
        self.rankings: dict[str, torch.Tensor] | None = None
        self.text_to_image = torch.as_tensor(text_to_image).long().cpu()
        self.num_images = int(self.text_to_image.max()) + 1 if self.text_to_image.numel() else 0
        self.image_labels = image_labels
        self.relevance = relevance
        self.folds, self.ks, self.ndcg_ks, self.overlap_ks = folds, tuple(ks), tuple(ndcg_ks), tuple(overlap_ks)
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

    def _collect(self, kind: str, expected: int):
        embs = getattr(self, f"{kind}_emb")
        if isinstance(embs, list) and not embs:
            raise RuntimeError(f"RetrievalEvaluator.compute() called with no {kind} embeddings; call update() first")
        emb, idx = dim_zero_cat(embs), dim_zero_cat(getattr(self, f"{kind}_idx"))
        refs = getattr(self, f"{kind}_ref")
        ref = None if (isinstance(refs, list) and not refs) else dim_zero_cat(refs)
        if ref is not None and ref.shape[0] != emb.shape[0]:
            raise RuntimeError(f"{kind}_ref was given for some batches but not others")
        emb_u = _unique_by_index(emb, idx, expected, f"{kind}s")
        ref_u = None if ref is None else _unique_by_index(ref, idx, expected, f"{kind}s")
        return emb_u, ref_u

    def _metrics(self, images: torch.Tensor, texts: torch.Tensor, record: dict | None = None) -> dict[str, float]:
        """Every tier's metrics; ``record`` receives per-query results over the whole gallery."""
        common = dict(image_labels=self.image_labels, ks=self.ks, relevance=self.relevance, ndcg_ks=self.ndcg_ks,
                      ties=self.ties)
        t2i = self.text_to_image.to(images.device)
        tiers = self.tiers or {"": self.folds}
        if record is not None and 1 not in tiers.values():
            retrieval_metrics(images, texts, t2i, record=record, **common)
        out = {}
        for name, folds in tiers.items():
            part = retrieval_metrics(images, texts, t2i, folds=folds, record=record if folds == 1 else None, **common)
            out |= {(f"{name}/{k}" if name else k): v for k, v in part.items()}
        return out

    def compute(self) -> dict[str, float]:
        images, image_ref = self._collect("image", self.num_images)
        texts, text_ref = self._collect("text", self.text_to_image.numel())
        record = {} if self.save_rankings else None
        out = self._metrics(images, texts, record)
        if record is not None:
            k, t2i = self.save_rankings, self.text_to_image.to(images.device)
            self_t, self_i = torch.arange(texts.shape[0], device=texts.device), torch.arange(images.shape[0], device=images.device)
            record["i2t/topk"] = top_k_gallery(images, texts, k)
            record["t2i/topk"] = top_k_gallery(texts, images, k)
            record["t2t/topk"] = top_k_gallery(texts, texts, k, self_t)
            record["i2i/topk"] = top_k_gallery(images, images, k, self_i)
            record["text_to_image"] = t2i
            self.rankings = {name: v.detach().cpu() for name, v in record.items()}
        for k in self.overlap_ks:
            if image_ref is not None:
                out[f"image/overlap@{k}"] = neighbourhood_overlap(images, image_ref, k)
            if text_ref is not None:
                out[f"text/overlap@{k}"] = neighbourhood_overlap(texts, text_ref, k)
        return out

    def chance(self) -> dict[str, float]:
        """The metrics of a constant model on this split: chance level under the tie rule
        (with ``ties=expected`` every metric's value when the ranking is uniformly random)."""
        ones_i = torch.ones(self.num_images, 1)
        ones_t = torch.ones(self.text_to_image.numel(), 1)
        return self._metrics(ones_i, ones_t)
