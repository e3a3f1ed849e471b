"""Towers, tokenizers and the LightningModule."""

from vlr.models.clip_towers import CLIPImageTower, CLIPTextTower
from vlr.models.image_tower import ImageTower
from vlr.models.retrieval_module import DualEncoder, RetrievalModule
from vlr.models.text_tower import TextTower
from vlr.models.tokenizer import build_tokenizer

__all__ = [
    "CLIPImageTower",
    "CLIPTextTower",
    "ImageTower",
    "TextTower",
    "DualEncoder",
    "RetrievalModule",
    "build_tokenizer",
]
