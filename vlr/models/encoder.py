"""`DualEncoder`: the two towers and their projections into one L2-normalised space."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlr.models.tokens import image_tokens, text_tokens


def tower_dim(tower: nn.Module) -> int:
    """A tower's output size (its ``out_dim``: the one attribute every tower declares)."""
    return int(getattr(tower, "out_dim"))  # noqa: B009 -- nn.Module types attributes as Tensor | Module


class DualEncoder(nn.Module):
    """Image and text towers with linear projections into a shared, L2-normalised space.

    ``embed_dim=None`` keeps the towers' own output space (identity projections), for
    towers that already share one (CLIP's projected embeddings)."""

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, embed_dim: int | None):
        super().__init__()
        self.image_tower, self.text_tower = image_tower, text_tower
        self.grad_checkpointing = False  # the towers recompute activations in backward (set by the module)
        if embed_dim is None:
            if image_tower.out_dim != text_tower.out_dim:
                raise ValueError(
                    f"model.embed_dim=null needs towers with one output size, got image {image_tower.out_dim} "
                    f"and text {text_tower.out_dim}; set model.embed_dim"
                )
            self.image_proj: nn.Module = nn.Identity()
            self.text_proj: nn.Module = nn.Identity()
            self.embed_dim: int = tower_dim(image_tower)
        else:
            self.image_proj = nn.Linear(tower_dim(image_tower), embed_dim)
            self.text_proj = nn.Linear(tower_dim(text_tower), embed_dim)
            self.embed_dim = embed_dim

    def forward(self, images, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_images(images), self.embed_texts(input_ids, attention_mask)

    def tower_features(self, images, input_ids, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """The towers' outputs before the projections (what ``forward`` projects and normalises)."""
        return self.image_tower(images), self.text_tower(input_ids, attention_mask)

    def encode_with_tokens(self, images, input_ids, attention_mask) -> dict[str, torch.Tensor]:
        """``forward``'s embeddings (``image_emb``, ``text_emb``) with the towers' token states
        (``image_tokens``, ``text_tokens``) from the same pass, for the fusion encoder."""
        return {**self.image_with_tokens(images), **self.text_with_tokens(input_ids, attention_mask)}

    def image_with_tokens(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, tokens = image_tokens(self.image_tower, images)
        return {"image_emb": F.normalize(self.image_proj(pooled), dim=-1), "image_tokens": tokens}

    def text_with_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled, tokens = text_tokens(self.text_tower, input_ids, attention_mask)
        return {"text_emb": F.normalize(self.text_proj(pooled), dim=-1), "text_tokens": tokens}

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_proj(self.image_tower(images)), dim=-1)

    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_proj(self.text_tower(input_ids, attention_mask)), dim=-1)
