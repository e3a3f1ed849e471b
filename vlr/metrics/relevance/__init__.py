"""Relevance: what a single-modal (and graded cross-modal) number is measured against.

One file per kind (the ``relevance`` config group, ``vlr/conf/relevance/``):
``scene`` (the synthetic generator's ground truth, `scene.py`), ``rouge_l`` (the papers'
measure, `rouge_l.py`), ``labels`` (shared class or category ids, `labels.py`) and ``cxc``
(Crisscrossed Captions human ratings for COCO, `cxc.py`). `build.py` turns the config into
the relevances of a split and the `RetrievalEvaluator` that reports them; every NDCG key
names its relevance (``test/i2i/scene_NDCG@10``).
"""

from vlr.metrics.relevance.build import build_evaluator, build_relevance, relevance_kinds
from vlr.metrics.relevance.graded import GradedRelevance
from vlr.metrics.relevance.labels import labels_relevance
from vlr.metrics.relevance.rouge_l import rouge_l_relevance, tokenize_caption
from vlr.metrics.relevance.scene import scene_relevance

__all__ = [
    "GradedRelevance",
    "build_evaluator",
    "build_relevance",
    "labels_relevance",
    "relevance_kinds",
    "rouge_l_relevance",
    "scene_relevance",
    "tokenize_caption",
]
