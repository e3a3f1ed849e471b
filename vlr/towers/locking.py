"""Partial locking and gradient checkpointing: the switches on a tower's layers.

Partial locking, as open_clip's ``--lock-image-unlocked-groups`` / ``--lock-text-unlocked-layers``.

A tower is an ordered list of layer groups from the input side: the stem (patch or token
embeddings), each transformer block, and the head (final norm, projection) when it has
one. ``unlocked_layers=N`` keeps the last N groups trainable and freezes the rest; ``0``
freezes the whole tower and ``null`` locks nothing. It is a training choice, separate from
the imbalance settings that shrink or freeze a tower to make one modality weaker.
"""

from __future__ import annotations

from torch import nn

from vlr.errors import ConfigError


def lock_groups(groups: list[list[nn.Parameter]], unlocked: int | None, option: str) -> None:
    """Freeze every group but the last ``unlocked`` (in place)."""
    if unlocked is None:
        return
    if isinstance(unlocked, bool) or not isinstance(unlocked, int) or not 0 <= unlocked <= len(groups):
        raise ConfigError(
            f"{option} must be an integer from 0 to {len(groups)} (the tower's layer groups), got {unlocked!r}"
        )
    for group in groups[: len(groups) - unlocked]:
        for param in group:
            param.requires_grad_(False)


def _blocks(model: nn.Module) -> list[nn.Module]:
    """The model's stack of blocks: the ModuleList/Sequential of same-class children holding
    the most parameters (``blocks`` of a timm ViT, ``encoder.layer`` of BERT, ``encoder.layers``
    of CLIP)."""
    stacks = [
        m
        for m in model.modules()
        if isinstance(m, (nn.ModuleList, nn.Sequential)) and len(m) > 0 and len({type(c) for c in m}) == 1
    ]
    if not stacks:
        raise ConfigError(f"{type(model).__name__} has no stack of blocks to lock layer by layer")
    return list(max(stacks, key=lambda m: sum(p.numel() for p in m.parameters())))


def transformer_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """[stem, block 0, ..., block L-1, head]: parameters registered before the blocks, each
    block, and those after them (empty groups left out)."""
    blocks = _blocks(model)
    in_block = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    stem: list[nn.Parameter] = []
    head: list[nn.Parameter] = []
    per_block: list[list[nn.Parameter]] = [[] for _ in blocks]
    for param in model.parameters():
        if id(param) in in_block:
            per_block[in_block[id(param)]].append(param)
        elif any(per_block):
            head.append(param)
        else:
            stem.append(param)
    return [g for g in (stem, *per_block, head) if g]


def set_hf_grad_checkpointing(model, enable: bool, side: str) -> None:
    """A transformers model's gradient checkpointing, non-reentrant (it then works inside
    ``torch.func.functional_call``, CoVLR's virtual step, and with frozen inputs)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"model.grad_checkpointing: the {side} tower ({type(model).__name__}) does not support it")
    if enable and getattr(model.config, "use_cache", False):
        model.config.use_cache = False  # what transformers would switch off itself, with a warning
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x; the old names warn
        if enable:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.activation_checkpointing_disable()
    elif enable:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()
