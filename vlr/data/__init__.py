"""Data: sources (Karpathy JSON, synthetic), datasets, the datamodule."""

from vlr.data.corpus import CaptionSplit
from vlr.data.datamodule import RetrievalDataModule
from vlr.data.sources import SOURCES

__all__ = ["CaptionSplit", "RetrievalDataModule", "SOURCES"]
