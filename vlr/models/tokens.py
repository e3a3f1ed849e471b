"""The towers' token states beside their pooled features, from one forward pass (what fusion reads).

A tower's ``forward`` returns one pooled vector per item; the fusion encoder also needs the
sequence it was pooled from: the image's patch tokens and the caption's token states. These
functions run each tower once and return both, the pooled output computed by the same calls
the tower's own ``forward`` makes (so the ITC embeddings do not change when fusion is on).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.towers import CLIPImageTower, CLIPTextTower, ImageTower, TextTower

SUPPORTED = "vlr.towers.ImageTower (timm), vlr.towers.TextTower (transformers) and the CLIP towers"


def _unsupported(tower: nn.Module, side: str) -> ConfigError:
    return ConfigError(
        f"model.fusion: the {side} tower {type(tower).__name__} does not expose token states; "
        f"fusion supports {SUPPORTED}"
    )


def image_tokens(tower: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, D_out], tokens [B, N, D_tok]) of one image batch."""
    if isinstance(tower, ImageTower):
        backbone: Any = tower.backbone
        features = backbone.forward_features(images)
        pooled = backbone.forward_head(features)  # timm's forward is forward_head(forward_features(x))
        tokens = features if features.ndim == 3 else features.flatten(2).transpose(1, 2)  # CNN maps: H*W tokens
        return pooled, tokens
    if isinstance(tower, CLIPImageTower):
        out = tower.model(pixel_values=images)
        return out.image_embeds, out.last_hidden_state
    raise _unsupported(tower, "image")


def text_tokens(
    tower: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled [B, D_out], token states [B, L, D_tok]) of one caption batch."""
    if isinstance(tower, TextTower):
        hidden = tower.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return tower.pool(hidden, attention_mask), hidden
    if isinstance(tower, CLIPTextTower):
        out = tower.model(input_ids=input_ids, attention_mask=attention_mask)
        return out.text_embeds, out.last_hidden_state
    raise _unsupported(tower, "text")


def token_width(tower: nn.Module) -> int:
    """The width of a tower's token states (not its pooled ``out_dim``: CLIP projects the pool)."""
    if isinstance(tower, ImageTower):
        return int(getattr(tower.backbone, "num_features"))  # noqa: B009 -- nn.Module types it Tensor | Module
    if isinstance(tower, TextTower):
        return int(tower.encoder.config.hidden_size)
    if isinstance(tower, (CLIPImageTower, CLIPTextTower)):
        return int(tower.model.config.hidden_size)
    raise _unsupported(tower, "image" if hasattr(tower, "data_config") else "text")
