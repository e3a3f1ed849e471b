"""Objective plugins, found by name: ``objective=infonce`` / ``triplet`` / ``covlr`` / ``relation_kd`` / ``sad``.

Add one: a file in this package with an `Objective` subclass registered by
``@OBJECTIVES.register("name")`` (every module here is imported, so nothing else to
edit), and ``vlr/conf/objective/name.yaml`` with ``_target_: vlr.objectives.create_objective``
and ``name: name``. An objective in your own package works too: the same yaml with
``cls: mypkg.losses.MyObjective`` (``name`` then names its runs).
"""

import importlib
import pkgutil

from vlr.objectives.base import OBJECTIVES, Objective, Stages, create_objective
from vlr.objectives.covlr import CoVLR, RelationKD
from vlr.objectives.infonce import InfoNCE
from vlr.objectives.sad import StructureAwareDistillation
from vlr.objectives.triplet import Triplet

for _module in pkgutil.iter_modules(__path__):  # registers objectives added as new files
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "OBJECTIVES",
    "Objective",
    "Stages",
    "create_objective",
    "InfoNCE",
    "Triplet",
    "CoVLR",
    "RelationKD",
    "StructureAwareDistillation",
]
