"""Image tower: any timm model by name, pooled features out."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.towers.locking import lock_groups, transformer_groups


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
    ``unlocked_layers=N``: only the last N layer groups train (`vlr.towers.locking`).
    """

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        model_kwargs: dict | None = None,
        freeze: bool = False,
        unlocked_layers: int | None = None,
    ):
        super().__init__()
        self.backbone = timm.create_model(
            name, pretrained=pretrained, checkpoint_path=checkpoint_path or "", num_classes=0, **(model_kwargs or {})
        )
        self.out_dim = self.backbone.num_features
        if freeze:
            self.backbone.requires_grad_(False)
        lock_groups(self.layer_groups(), unlocked_layers, "model.image_tower.unlocked_layers")

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """timm's own coarse groups (stem, blocks, head) where the model defines them, as
        open_clip locks timm towers; else the generic split around the stack of blocks."""
        if hasattr(self.backbone, "group_matcher"):
            from timm.models import group_parameters

            matcher: Any = getattr(self.backbone, "group_matcher")  # noqa: B009 -- typed Tensor | Module
            groups = group_parameters(self.backbone, matcher(coarse=True))
            return [[self.backbone.get_parameter(n) for n in groups[k]] for k in sorted(groups)]
        return transformer_groups(self.backbone)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's own switch: blocks recompute their activations in the backward pass."""
        switch: Any = getattr(self.backbone, "set_grad_checkpointing", None)
        if switch is None:
            raise ConfigError(
                f"model.grad_checkpointing: timm model {type(self.backbone).__name__} has no switch for it"
            )
        switch(enable)

    @property
    def fixed_input_size(self) -> bool:
        """A timm ViT built for one image size (a strict patch embedding, no dynamic size)
        asserts on any other size at its first step: `vlr.build.check_image_size` says so first."""
        patch = getattr(self.backbone, "patch_embed", None)
        return bool(getattr(patch, "strict_img_size", False)) and not getattr(self.backbone, "dynamic_img_size", False)

    def data_config(self) -> dict:
        """timm's preprocessing for this model (what its pretrained weights expect)."""
        return timm_data_config(self.backbone)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)
