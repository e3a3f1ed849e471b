"""Intra-modal reference (teacher) representations: frozen initial towers or feature files."""

from vlr.reference.files import FeatureFileError, feature_dims, load_features, save_features
from vlr.reference.references import TEACHERS, FeatureReference, FrozenInitReference, build_reference

__all__ = [
    "TEACHERS",
    "FeatureFileError",
    "FeatureReference",
    "FrozenInitReference",
    "build_reference",
    "feature_dims",
    "load_features",
    "save_features",
]
