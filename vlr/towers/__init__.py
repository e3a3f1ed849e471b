"""Towers: image and text encoders (timm, transformers, CLIP, open_clip), layer locking and
gradient checkpointing, open_clip model names, and the tokenizers that feed the text towers.

Add a tower: an ``nn.Module`` with ``out_dim``, ``forward`` (images, or ``input_ids`` and
``attention_mask``) returning one feature per item, and ``data_config()`` on image towers
(for ``data.image_transform=tower``); export it here and point a
``vlr/conf/model/<name>.yaml`` ``image_tower``/``text_tower`` node's ``_target_`` at it.
"""

from vlr.towers.clip_towers import CLIPImageTower, CLIPTextTower
from vlr.towers.image_tower import ImageTower
from vlr.towers.open_clip_towers import OpenCLIPImageTower, OpenCLIPTextTower
from vlr.towers.text_tower import TextTower
from vlr.towers.tokenizer import build_tokenizer

__all__ = [
    "CLIPImageTower",
    "CLIPTextTower",
    "ImageTower",
    "OpenCLIPImageTower",
    "OpenCLIPTextTower",
    "TextTower",
    "build_tokenizer",
]
