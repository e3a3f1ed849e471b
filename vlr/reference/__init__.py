"""Intra-modal references: frozen initial towers, feature files or encoders learned from a disjoint
corpus (the ``reference`` config group).

Add one: a module with the members of the `Reference` protocol (``image_dim``/``text_dim``,
``prepare(split_name, split, augmented)`` and ``embed(kind, split, batch)`` returning L2-normalised
rows), and ``vlr/conf/reference/<name>.yaml`` whose ``_target_`` builds it (``_partial_: true`` when
it needs the encoder's towers). When the module builds, prepares and checkpoints it: `lifecycle`."""

from vlr.reference.files import FeatureFileError, feature_dims, load_features, save_features
from vlr.reference.learned import LearnedReference
from vlr.reference.lifecycle import build_reference
from vlr.reference.protocol import Reference
from vlr.reference.references import FeatureReference, FrozenInitReference

__all__ = [
    "FeatureFileError",
    "FeatureReference",
    "FrozenInitReference",
    "LearnedReference",
    "Reference",
    "build_reference",
    "feature_dims",
    "load_features",
    "save_features",
]
