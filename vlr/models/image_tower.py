"""Image tower: any timm model by name, pooled features out."""

from __future__ import annotations

import timm
import torch
from torch import nn


class ImageTower(nn.Module):
    """``timm.create_model(name, pretrained, checkpoint_path, num_classes=0, **model_kwargs)``.

    ``pretrained=true`` downloads only when asked (and online); ``checkpoint_path`` loads
    local weights. ``model_kwargs`` override the architecture (e.g. a shallow ViT at 64 px).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        model_kwargs: dict | None = None,
        freeze: bool = False,
    ):
        super().__init__()
        self.backbone = timm.create_model(
            name, pretrained=pretrained, checkpoint_path=checkpoint_path or "", num_classes=0, **(model_kwargs or {})
        )
        self.out_dim = self.backbone.num_features
        if freeze:
            self.backbone.requires_grad_(False)

    def data_config(self) -> dict:
        """timm's preprocessing for this model (what its pretrained weights expect)."""
        from vlr.data.transforms import timm_data_config

        return timm_data_config(self.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)
