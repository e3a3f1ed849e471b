"""Data: sources (Karpathy JSON, COCO captions, LAVIS, synthetic), datasets, the datamodule
(tokenizers are in `vlr.towers`).

Add a data format: a reader returning `CaptionSplit` per split, registered in
`vlr.data.sources` (``@SOURCES.register("name")``), and ``vlr/conf/data/<name>.yaml`` with
``source: name``. This package imports nothing from models, objectives or metrics.
"""

from vlr.data.corpus import CaptionSplit
from vlr.data.datamodule import RetrievalDataModule
from vlr.data.sources import SOURCES

__all__ = ["CaptionSplit", "RetrievalDataModule", "SOURCES"]
