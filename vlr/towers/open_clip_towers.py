"""open_clip towers (``model=open_clip``): any model of open_clip's zoo, with its own preprocessing and tokenizer.

``arch`` is an open_clip model name (``ViT-B-32``, ``ViT-B-16-SigLIP``, ``EVA02-B-16``, ...),
a path to a model-config JSON (registered under a name of its content, see
`vlr.towers.open_clip_names`), or ``hf-hub:``/``local-dir:`` as open_clip reads them. ``pretrained`` is an open_clip
tag (``openai``, ``laion2b_s34b_b79k``, ...; downloaded once, online), a local checkpoint
file, or null for random weights. Each tower keeps its half of the model and returns the
projected embedding (before normalisation), so ``model.embed_dim: null`` trains in the
model's own joint space; the logit scale stays behind (vlr's objectives carry their own).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.towers.open_clip_names import open_clip_name


def _is_file(pretrained: str) -> bool:
    return "/" in pretrained or bool(Path(pretrained).suffix)


def _check_pretrained(name: str, pretrained: str) -> None:
    import open_clip

    if _is_file(pretrained):
        if not Path(pretrained).is_file():
            raise ConfigError(f"model.pretrained={pretrained}: no such checkpoint file")
        return
    if ":" in name:  # hf-hub:/local-dir: bring their own weights
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        known = f"its tags: {', '.join(tags)}" if tags else "it has none; give a checkpoint file"
        raise ConfigError(f"model.pretrained={pretrained} is not a tag of {name} ({known})")


def _quick_gelu_needed(name: str, pretrained: str | None) -> bool:
    """OpenAI's weights were trained with QuickGELU; ``ViT-B-32`` + ``openai`` would load them into
    GELU blocks (open_clip only warns). The tag's own config says which activation it needs."""
    import open_clip

    if not pretrained or _is_file(pretrained) or ":" in name:
        return False
    wants = bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    has = bool((open_clip.get_model_config(name) or {}).get("quick_gelu", False))
    return wants and not has


class _OpenCLIPChatter(logging.Filter):
    """open_clip reports every step of building a model at INFO on the root logger, and warns that
    random weights are random when they were asked for: dropped while vlr builds one."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "No pretrained weights loaded" in record.getMessage():
            return False
        return not ("open_clip" in record.pathname and record.levelno < logging.WARNING)


_BUILT: dict[str, Any] = {}  # the last model built, kept for the other tower of the same model


def create_open_clip(arch: str, pretrained: str | None, side: str) -> Any:
    """The whole open_clip model (CPU, fp32), weights from ``pretrained`` when given. Both towers
    of one model come from one build: the first tower's call builds it, the other's takes it."""
    import open_clip

    name = open_clip_name(arch)
    if pretrained:
        _check_pretrained(name, str(pretrained))
    key = (name, str(pretrained))
    if _BUILT.get("key") == key and _BUILT.get("for") == side:
        model = _BUILT["model"]
        _BUILT.clear()
        return model
    chatter = _OpenCLIPChatter()
    logging.getLogger().addFilter(chatter)
    try:
        kwargs = {"force_quick_gelu": True} if _quick_gelu_needed(name, pretrained) else {}
        model = open_clip.create_model(
            name, pretrained=pretrained or None, require_pretrained=bool(pretrained), **kwargs
        )
    finally:
        logging.getLogger().removeFilter(chatter)
    _BUILT.clear()
    _BUILT.update({"key": key, "for": "text" if side == "image" else "image", "model": model})
    return model


def _locks(unlocked: int | None, option: str) -> bool:
    """Whether to lock (``unlocked`` layers stay trainable; null locks nothing), checked: open_clip's
    own locks count their groups themselves and unlock everything past their number."""
    if unlocked is None:
        return False
    if isinstance(unlocked, bool) or not isinstance(unlocked, int) or unlocked < 0:
        raise ConfigError(
            f"{option} must be a non-negative integer (layer groups left trainable) or null, got {unlocked!r}"
        )
    return True


def _embed_dim(model: Any) -> int:
    projection = getattr(model, "text_projection", None)
    if isinstance(projection, nn.Linear):
        return int(projection.out_features)
    if isinstance(projection, torch.Tensor):
        return int(projection.shape[1])
    return int(model.text.output_dim)  # CustomTextCLIP: the text tower projects itself


class OpenCLIPImageTower(nn.Module):
    """open_clip's vision tower (``model.visual``) with its projection."""

    fixed_input_size = True  # positional embeddings for one image size: data.image_transform=tower

    def __init__(
        self, arch: str, pretrained: str | None = None, freeze: bool = False, unlocked_layers: int | None = None
    ):
        super().__init__()
        model = create_open_clip(arch, pretrained, "image")
        self.out_dim = _embed_dim(model)
        self.visual = model.visual
        self.preprocess_cfg = dict(getattr(self.visual, "preprocess_cfg", {}) or {})
        if _locks(unlocked_layers, "model.image_tower.unlocked_layers"):  # open_clip's own groups
            self.visual.lock(unlocked_groups=unlocked_layers, freeze_bn_stats=False)
        if freeze:
            self.visual.requires_grad_(False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.visual.set_grad_checkpointing(enable)

    def data_config(self) -> dict:
        """open_clip's preprocessing for this model: its size, mean/std and interpolation; a
        square resize for ``resize_mode: squash``, else the short side and a centre crop."""
        cfg = self.preprocess_cfg
        size = cfg.get("size", getattr(self.visual, "image_size", 224))
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        return {
            "input_size": (3, int(height), int(width)),
            "interpolation": cfg.get("interpolation", "bicubic"),
            "mean": tuple(cfg.get("mean", OPENAI_DATASET_MEAN)),
            "std": tuple(cfg.get("std", OPENAI_DATASET_STD)),
            "crop_pct": 1.0,
            "crop_mode": "squash" if cfg.get("resize_mode") == "squash" else "center",
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)


class OpenCLIPTextTower(nn.Module):
    """open_clip's text side (the model without ``visual`` and the logit scale/bias) with its
    projection. open_clip's tokenizer pads to the model's context length, and the model reads
    the token ids alone (its causal mask and end-of-text pooling), so ``attention_mask`` is
    not used."""

    def __init__(
        self, arch: str, pretrained: str | None = None, freeze: bool = False, unlocked_layers: int | None = None
    ):
        super().__init__()
        model = create_open_clip(arch, pretrained, "text")
        self.out_dim = _embed_dim(model)
        del model.visual
        for name in ("logit_scale", "logit_bias"):
            if isinstance(getattr(model, name, None), nn.Parameter):
                delattr(model, name)
                setattr(model, name, None)
        self.model = model
        if _locks(unlocked_layers, "model.text_tower.unlocked_layers"):  # open_clip's own layers
            self.model.lock_text_tower(unlocked_layers=unlocked_layers)
        if freeze:
            self.model.requires_grad_(False)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if hasattr(self.model, "text"):
            self.model.text.set_grad_checkpointing(enable)
        else:
            self.model.transformer.grad_checkpointing = enable

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.encode_text(input_ids)
