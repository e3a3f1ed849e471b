"""CLIP towers (the papers' ViT-B/32 backbone) through transformers, with CLIP's own projections.

``CLIPImageTower`` / ``CLIPTextTower`` load ``CLIPVisionModelWithProjection`` /
``CLIPTextModelWithProjection`` from a hub name or a local directory (a full CLIP
checkpoint holds both) and return the projected embeddings, so with ``model.embed_dim:
null`` training starts from CLIP's joint space itself.

``config`` instead of ``name_or_path`` builds the architecture with random weights from
`transformers.CLIPConfig` fields (``{}``: CLIP ViT-B/32 itself), e.g. for benchmarks
without the weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, CLIPConfig, CLIPTextModelWithProjection, CLIPVisionModelWithProjection

from vlr.towers.locking import lock_groups, set_hf_grad_checkpointing, transformer_groups

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _config(name_or_path: str | dict, kind: str):
    """The vision or text config of a full CLIP checkpoint, with the checkpoint's projection size
    (sub-configs do not always repeat it); a vision- or text-only checkpoint's own config. A
    dict: `CLIPConfig` fields."""
    config = (
        CLIPConfig(**name_or_path) if isinstance(name_or_path, dict) else AutoConfig.from_pretrained(str(name_or_path))
    )
    if config.model_type != "clip":
        return config
    sub = getattr(config, f"{kind}_config")
    sub.projection_dim = config.projection_dim
    return sub


def _model(model_class, name_or_path: str | None, config: dict | None, kind: str, option: str) -> Any:
    """``model_class`` from a checkpoint (hub name or local directory) or, random, from `CLIPConfig` fields."""
    if (name_or_path is None) == (config is None):
        raise ValueError(f"model.{option} needs exactly one of name_or_path or config")
    if config is not None:
        return model_class(_config(dict(config), kind))
    return model_class.from_pretrained(str(name_or_path), config=_config(str(name_or_path), kind))


class _CLIPTower(nn.Module):
    """One side of CLIP with its projection: ``side`` is ``image`` or ``text``."""

    model_class: Any = None
    side = ""

    def __init__(
        self,
        name_or_path: str | None = None,
        freeze: bool = False,
        config: dict | None = None,
        unlocked_layers: int | None = None,
    ):
        super().__init__()
        kind = "vision" if self.side == "image" else "text"
        self.model = _model(self.model_class, name_or_path, config, kind, f"{self.side}_tower")
        self.out_dim = self.model.config.projection_dim
        if freeze:
            self.model.requires_grad_(False)
        lock_groups(transformer_groups(self.model), unlocked_layers, f"model.{self.side}_tower.unlocked_layers")

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        set_hf_grad_checkpointing(self.model, enable, self.side)


class CLIPImageTower(_CLIPTower):
    model_class = CLIPVisionModelWithProjection
    side = "image"
    fixed_input_size = True  # positional embeddings for one image size: data.image_transform=tower

    def data_config(self) -> dict:
        """CLIP's preprocessing: bicubic resize of the short side and centre crop, OpenAI mean/std."""
        size = self.model.config.image_size
        return {
            "input_size": (3, size, size),
            "interpolation": "bicubic",
            "mean": OPENAI_CLIP_MEAN,
            "std": OPENAI_CLIP_STD,
            "crop_pct": 1.0,
            "crop_mode": "center",
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=images).image_embeds


class CLIPTextTower(_CLIPTower):
    model_class = CLIPTextModelWithProjection
    side = "text"

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).text_embeds
