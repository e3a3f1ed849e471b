"""Data: sources (Karpathy JSON, COCO captions, LAVIS, synthetic), datasets, tokenizers, the datamodule.

Add a data format: a reader returning `CaptionSplit` per split, registered in
`vlr.data.sources` (``@SOURCES.register("name")``), and ``vlr/conf/data/<name>.yaml`` with
``source: name``. This package imports nothing from models, objectives or metrics.
"""

from vlr.data.corpus import CaptionSplit
from vlr.data.datamodule import RetrievalDataModule
from vlr.data.sources import SOURCES
from vlr.data.tokenizer import build_tokenizer

__all__ = ["CaptionSplit", "RetrievalDataModule", "SOURCES", "build_tokenizer"]
