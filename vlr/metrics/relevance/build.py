"""Build the relevances a run asks for and the evaluator that uses them (``relevance`` group).

``relevance.name`` is the primary relevance (``rsum_single`` and the reports use it; the data
preset chooses it: ``scene`` for synthetic data, ``rouge_l`` for real captions);
``relevance.also`` lists more graded kinds to report beside it (``[rouge_l]``: the papers'
numbers on synthetic data too). ``cxc`` is not a graded matrix but human ratings: it adds
Spearman rho and CxC recall and grades NDCG with its ``also`` (ROUGE-L by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from vlr.errors import ConfigError
from vlr.metrics.relevance.graded import KINDS, GradedRelevance
from vlr.metrics.relevance.labels import labels_relevance
from vlr.metrics.relevance.rouge_l import rouge_l_relevance
from vlr.metrics.relevance.scene import scene_relevance

if TYPE_CHECKING:
    from vlr.metrics.evaluator import RetrievalEvaluator

ALL_KINDS = (*KINDS, "cxc")


def _graded(kind: str, targets: Mapping[str, Any], where: str) -> GradedRelevance:
    if kind == "scene":
        scenes = targets.get("scenes")
        if scenes is None:
            raise ConfigError(
                f"relevance=scene needs each image's scene (the 'objects' of vlr's synthetic annotation), "
                f"which {where} does not have: use relevance=rouge_l (captions) or relevance=labels"
            )
        return GradedRelevance("scene", scene_relevance(scenes), "image")
    if kind == "labels":
        labels = targets.get("image_labels")
        if labels is None:
            raise ConfigError(
                f"relevance=labels needs image labels (class ids or instance categories), which {where} does "
                "not have: use relevance=rouge_l"
            )
        return GradedRelevance("labels", labels_relevance(labels), "image")
    # the papers' measure, on any captioned data
    matrix = rouge_l_relevance(
        targets["captions"],
        targets["text_to_image"],
        num_images=targets["num_images"],
        cache_dir=targets.get("cache_dir"),
    )
    return GradedRelevance("rouge_l", matrix, "caption")


def relevance_kinds(cfg: Mapping[str, Any] | None) -> list[str]:
    """The graded kinds ``cfg`` asks for, the primary first, each once (default: rouge_l)."""
    cfg = dict(cfg or {"name": "rouge_l"})
    name = cfg.get("name", "rouge_l")
    also = cfg.get("also") or []
    if isinstance(also, str):
        also = [also]
    for kind in [name, *also]:
        if kind not in ALL_KINDS:
            raise ConfigError(f"relevance '{kind}' is not one of {ALL_KINDS} (relevance.name / relevance.also)")
        if kind == "cxc" and kind != name:
            raise ConfigError("relevance.also=[cxc]: choose relevance=cxc (it grades NDCG with its own 'also')")
    return list(dict.fromkeys(k for k in [name, *also] if k != "cxc"))


def build_relevance(cfg: Mapping[str, Any] | None, targets: Mapping[str, Any], where: str = "this data") -> dict:
    """``{name: GradedRelevance}`` for the split ``targets`` (`RetrievalDataModule.eval_targets`),
    the primary first."""
    return {kind: _graded(kind, targets, where) for kind in relevance_kinds(cfg)}


def build_evaluator(
    targets: Mapping[str, Any],
    relevance_cfg: Mapping[str, Any] | None,
    *,
    split: str,
    **options: Any,
) -> RetrievalEvaluator:
    """The `RetrievalEvaluator` of one split with the relevances ``relevance_cfg`` asks for
    (and CxC's human ratings with ``relevance=cxc``). ``options``: the evaluator's own (``ks``,
    ``ndcg_ks``, ``overlap_ks``, ``ties``, ``tie_tolerance``, ``save_rankings``), passed on."""
    from vlr.metrics.evaluator import RetrievalEvaluator  # the evaluator imports this package's kinds

    where = f"the {split} split of {targets.get('source') or 'this data'}"
    relevance = build_relevance(relevance_cfg, targets, where)
    cxc = None
    if relevance_cfg and relevance_cfg.get("name") == "cxc":
        from vlr.metrics.relevance.cxc import CxCRatings

        cxc = CxCRatings.for_split(relevance_cfg, split, targets)
    return RetrievalEvaluator(
        torch.as_tensor(targets["text_to_image"]),
        image_labels=targets.get("image_labels"),
        relevance=relevance,
        cxc=cxc,
        folds=targets.get("folds", 1),
        tiers=targets.get("tiers"),
        **options,
    )
