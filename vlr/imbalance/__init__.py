"""Modal imbalance: named, seeded settings that weaken one modality of the training data.

Add an imbalance op: a function registered in `vlr.imbalance.ops` (``@TEXT_OPS.register("name")``
or ``@IMAGE_OPS.register("name")``), then name it in a ``vlr/conf/imbalance/<setting>.yaml``
(``text: {name: amount}`` or ``image: {name: amount}``).
"""

from vlr.imbalance.ops import ATTRIBUTE_WORDS, IMAGE_OPS, TEXT_OPS
from vlr.imbalance.setting import Imbalance

__all__ = ["ATTRIBUTE_WORDS", "IMAGE_OPS", "TEXT_OPS", "Imbalance"]
