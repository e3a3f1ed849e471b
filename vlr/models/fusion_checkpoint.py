"""Load a released model's fusion layers and ITM head into `vlr.models.fusion.FusionEncoder`.

``model.fusion.checkpoint=PATH`` (a local ``torch.save`` file; nothing downloads) with
``model.fusion.checkpoint_layout`` naming whose keys it holds:

=================  ============================================  ===========  =========
layout             fusion layer i of vlr is checkpoint key ...   first layer  ITM head
=================  ============================================  ===========  =========
``albef``          ``text_encoder.encoder.layer.{first+i}.*``    6            linear
``albef_pretrain`` ``text_encoder.bert.encoder.layer.{first+i}.*``  6         linear
``xvlm``           ``text_encoder.encoder.layer.{first+i}.*``    6            mlp
``blip``           ``text_encoder.encoder.layer.{first+i}.*``    0            linear
``vlr``            ``layer.{i}.*`` (a `FusionEncoder` state dict)  0          as built
=================  ============================================  ===========  =========

(ALBEF's retrieval model and X-VLM hold a ``BertModel`` as ``text_encoder``; ALBEF's
pre-training checkpoint a ``BertForMaskedLM``, hence ``.bert.``; BLIP's ITM encoder has
cross-attention in every layer.) The layer's own names are BERT's and vlr's alike
(``attention.self.query``, ``crossattention.output.LayerNorm``, ``intermediate.dense``,
``output.dense``, ...), and ``itm_head.*`` maps to ``itm_head.*``. ``checkpoint_first_layer``
overrides the layout's first fusion layer. The file may hold the state dict itself or under
``model`` (ALBEF, X-VLM, BLIP) or ``state_dict``. Keys outside the fusion layers and the ITM
head (the towers, projections, queues) are not read. Every fusion parameter must be found, with
its shape, and no fusion-layer key may be left over: anything else is one error naming the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from vlr.errors import ConfigError

LAYOUTS = {
    "albef": ("text_encoder.encoder.layer.", 6),
    "albef_pretrain": ("text_encoder.bert.encoder.layer.", 6),
    "xvlm": ("text_encoder.encoder.layer.", 6),
    "blip": ("text_encoder.encoder.layer.", 0),
    "vlr": ("layer.", 0),
}


def fusion_state_dict(
    checkpoint: dict[str, torch.Tensor], layout: str, num_layers: int, first_layer: int | None = None
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(the checkpoint's fusion tensors under `FusionEncoder` names, fusion-layer keys beyond
    ``num_layers`` layers); see the module docstring for the layouts."""
    if layout not in LAYOUTS:
        raise ConfigError(f"model.fusion.checkpoint_layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    prefix, default_first = LAYOUTS[layout]
    first = default_first if first_layer is None else int(first_layer)
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.+)")
    mapped: dict[str, torch.Tensor] = {}
    beyond: list[str] = []
    for key, value in checkpoint.items():
        if key.startswith("itm_head."):
            mapped[key] = value
            continue
        m = pattern.fullmatch(key)
        if m is None:
            continue
        i = int(m.group(1)) - first
        if i < 0:
            continue  # a text-only layer below the fusion layers
        if i >= num_layers:
            beyond.append(key)
            continue
        mapped[f"layer.{i}.{m.group(2)}"] = value
    return mapped, beyond


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"model.fusion.checkpoint={path}: no such file")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the one line says which file and why
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"model.fusion.checkpoint={path}: not a readable torch checkpoint ({first})") from err
    for key in ("model", "state_dict"):
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
    if not isinstance(raw, dict):
        raise ConfigError(f"model.fusion.checkpoint={path}: holds a {type(raw).__name__}, not a state dict")
    return raw


def load_fusion_checkpoint(fusion: nn.Module, path: str | Path, layout: str, first_layer: int | None = None) -> None:
    """Copy the fusion layers and ITM head of the checkpoint at ``path`` into ``fusion``."""
    path = Path(path)
    own = fusion.state_dict()
    num_layers = len(getattr(fusion, "layer"))  # noqa: B009 -- typed Tensor | Module
    mapped, beyond = fusion_state_dict(_read(path), layout, num_layers, first_layer)
    missing = sorted(set(own) - set(mapped))
    unknown = sorted(set(mapped) - set(own))
    shapes = [
        f"{k} {tuple(mapped[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in mapped and mapped[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} fusion weights missing (e.g. {', '.join(missing[:3])})")
    if unknown:
        problems.append(f"{len(unknown)} unknown keys (e.g. {', '.join(unknown[:3])})")
    if beyond:
        problems.append(
            f"{len(beyond)} keys of fusion layers beyond model.fusion.layers={num_layers} (e.g. {beyond[0]})"
        )
    if shapes:
        problems.append(f"{len(shapes)} shapes differ (e.g. {shapes[0]})")
    if problems:
        raise ConfigError(
            f"model.fusion.checkpoint={path} (layout {layout}) does not fit the fusion encoder: {'; '.join(problems)}"
        )
    fusion.load_state_dict(mapped)
