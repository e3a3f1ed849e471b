"""The dual encoder and the LightningModule that trains it with an objective (towers: `vlr.towers`)."""

from vlr.models.encoder import DualEncoder
from vlr.models.retrieval_module import RetrievalModule

__all__ = ["DualEncoder", "RetrievalModule"]
