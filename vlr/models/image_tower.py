"""Image tower: any timm model by name, pooled features out."""

from __future__ import annotations

import timm
import torch
from torch import nn


def timm_data_config(backbone) -> dict:
    """timm's data config for ``backbone`` (input size, interpolation, crop, mean/std from its
    pretrained config), with the input size the model was actually built for: a ViT built
    with ``img_size=64`` keeps its pretrained config's 224 otherwise."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=backbone)
    built = getattr(getattr(backbone, "patch_embed", None), "img_size", None)
    if built is not None:
        config["input_size"] = (3, *built)
    return config


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
        return timm_data_config(self.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)
