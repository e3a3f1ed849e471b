"""Retrieval evaluation: cross-modal recall (VSE protocol), single-modal recall and NDCG, structure overlap.

Add a metric: a function of the gathered embeddings (and the split's targets) with ties
handled by `vlr.metrics.ranking` -- a ranking metric joins `retrieval.retrieval_metrics`,
a structure metric `overlap.py` -- called from `RetrievalEvaluator.compute`, which logs
every key it returns as ``val/<key>`` and ``test/<key>``. What a graded number is measured
against is `vlr.metrics.relevance` (the ``relevance`` config group: scene, rouge_l, labels,
cxc), which also builds the evaluator of a split. This package imports nothing from data,
models or objectives.
"""

from vlr.metrics.evaluator import RetrievalEvaluator
from vlr.metrics.overlap import neighbourhood_overlap
from vlr.metrics.relevance import GradedRelevance, build_evaluator, build_relevance, scene_relevance
from vlr.metrics.relevance.rouge_l import rouge_l_relevance, tokenize_caption
from vlr.metrics.retrieval import retrieval_metrics

__all__ = [
    "GradedRelevance",
    "RetrievalEvaluator",
    "build_evaluator",
    "build_relevance",
    "neighbourhood_overlap",
    "retrieval_metrics",
    "rouge_l_relevance",
    "scene_relevance",
    "tokenize_caption",
]
