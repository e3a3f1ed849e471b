"""Objective plugins, found by name: ``objective=infonce`` / ``triplet`` / ``covlr`` / ``relation_kd`` / ``sad``.

Add one: a file with an `Objective` subclass registered by ``@OBJECTIVES.register("name")`` and
``vlr/conf/objective/name.yaml``."""

from vlr.objectives.base import OBJECTIVES, Objective, create_objective
from vlr.objectives.covlr import CoVLR, RelationKD
from vlr.objectives.infonce import InfoNCE
from vlr.objectives.sad import StructureAwareDistillation
from vlr.objectives.triplet import Triplet

__all__ = [
    "OBJECTIVES",
    "Objective",
    "create_objective",
    "InfoNCE",
    "Triplet",
    "CoVLR",
    "RelationKD",
    "StructureAwareDistillation",
]
