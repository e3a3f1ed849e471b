"""Objective plugins, found by name: ``objective=infonce`` / ``triplet`` / ``covlr`` / ``sad`` (add one: a file + a yaml)."""

from vlr.objectives.base import OBJECTIVES, Objective, create_objective
from vlr.objectives.covlr import CoVLR
from vlr.objectives.infonce import InfoNCE
from vlr.objectives.sad import StructureAwareDistillation
from vlr.objectives.triplet import Triplet

__all__ = ["OBJECTIVES", "Objective", "create_objective", "InfoNCE", "Triplet", "CoVLR", "StructureAwareDistillation"]
