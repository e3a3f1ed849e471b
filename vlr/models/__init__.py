"""The dual encoder and the LightningModule that trains it with an objective.

The towers live in `vlr.towers`; their names stay importable from here, since configs written
for earlier layouts point ``_target_`` at ``vlr.models.ImageTower`` and friends.
"""

from vlr.models.encoder import DualEncoder
from vlr.models.retrieval_module import RetrievalModule
from vlr.towers import CLIPImageTower, CLIPTextTower, ImageTower, OpenCLIPImageTower, OpenCLIPTextTower, TextTower

__all__ = [
    "CLIPImageTower",
    "CLIPTextTower",
    "ImageTower",
    "OpenCLIPImageTower",
    "OpenCLIPTextTower",
    "TextTower",
    "DualEncoder",
    "RetrievalModule",
]
