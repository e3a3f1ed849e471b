"""Intra-modal references: frozen initial towers, feature files or encoders learned from a disjoint
corpus (the ``reference`` config group).

Add one: a module with ``image_dim``/``text_dim``, ``prepare(split_name, split, augmented)`` and
``embed(kind, split, batch)`` returning L2-normalised rows, and ``vlr/conf/reference/<name>.yaml``
whose ``_target_`` builds it (``_partial_: true`` when it needs the encoder's towers)."""

from vlr.reference.files import FeatureFileError, feature_dims, load_features, save_features
from vlr.reference.learned import LearnedReference
from vlr.reference.references import FeatureReference, FrozenInitReference, build_reference

__all__ = [
    "FeatureFileError",
    "FeatureReference",
    "FrozenInitReference",
    "LearnedReference",
    "build_reference",
    "feature_dims",
    "load_features",
    "save_features",
]
