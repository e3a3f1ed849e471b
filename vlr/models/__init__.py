"""Towers, the dual encoder and the LightningModule.

Add a tower: an ``nn.Module`` with ``out_dim``, ``forward`` (images, or ``input_ids`` and
``attention_mask``) returning one feature per item, and ``data_config()`` on image towers
(for ``data.image_transform=tower``); export it here and point a
``vlr/conf/model/<name>.yaml`` ``image_tower``/``text_tower`` node's ``_target_`` at it.
"""

from vlr.models.clip_towers import CLIPImageTower, CLIPTextTower
from vlr.models.encoder import DualEncoder
from vlr.models.image_tower import ImageTower
from vlr.models.open_clip_towers import OpenCLIPImageTower, OpenCLIPTextTower
from vlr.models.retrieval_module import RetrievalModule
from vlr.models.text_tower import TextTower

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
