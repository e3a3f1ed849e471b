"""Retrieval evaluation: cross-modal recall (VSE protocol), single-modal recall and NDCG, structure overlap."""

from vlr.metrics.evaluator import RetrievalEvaluator
from vlr.metrics.overlap import neighbourhood_overlap
from vlr.metrics.retrieval import retrieval_metrics
from vlr.metrics.rouge import rouge_l_relevance, tokenize_caption

__all__ = [
    "RetrievalEvaluator",
    "neighbourhood_overlap",
    "retrieval_metrics",
    "rouge_l_relevance",
    "tokenize_caption",
]
