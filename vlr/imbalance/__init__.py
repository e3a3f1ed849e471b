"""Modal imbalance: named, seeded settings that weaken one modality of the training data."""

from vlr.imbalance.ops import ATTRIBUTE_WORDS, IMAGE_OPS, TEXT_OPS
from vlr.imbalance.setting import Imbalance

__all__ = ["ATTRIBUTE_WORDS", "IMAGE_OPS", "TEXT_OPS", "Imbalance"]
