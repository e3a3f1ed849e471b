"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def cosine_with_warmup(
    optimizer, total_steps: int, warmup_fraction: float = 0.05, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """Linear warm-up over ``warmup_fraction`` of training, then cosine decay to ``min_lr_ratio``."""
    warmup = max(1, int(warmup_fraction * total_steps)) if warmup_fraction > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


def total_training_steps(trainer: Any) -> int:
    """Optimizer steps of the whole run, for a schedule's length, without building a loader.

    Lightning's ``estimated_stepping_batches`` would iterate the loader before a resume
    restores the loop state (and the resumed epoch would restart from its first batch), so
    the count comes from the datamodule's ``train_batches_per_epoch`` where it has one. With
    both ``max_steps`` and ``max_epochs``, the run ends at whichever comes first, and so does this."""
    datamodule: Any = getattr(trainer, "datamodule", None)
    max_steps = trainer.max_steps if trainer.max_steps is not None and trainer.max_steps > 0 else None
    if not hasattr(datamodule, "train_batches_per_epoch") or trainer.max_epochs is None or trainer.max_epochs < 0:
        return max_steps or int(trainer.estimated_stepping_batches)
    per_epoch = datamodule.train_batches_per_epoch()  # within trainer.limit_train_batches
    by_epochs = max(1, math.ceil(per_epoch / trainer.accumulate_grad_batches) * trainer.max_epochs)
    return by_epochs if max_steps is None else min(max_steps, by_epochs)  # whichever ends the run first


def parameter_groups(module, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """Trainable parameters in two groups: matrices decay, vectors (biases, norms,
    temperatures) do not.

    ``lr_scales`` {parameter-name prefix: factor}: the parameters under a prefix whose factor is
    not 1 get their own two groups, named after the prefix, with ``lr_scale`` = the factor
    (`scale_learning_rates` applies it; e.g. a fusion encoder trained from scratch on
    pretrained towers)."""
    named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    scaled = {prefix: f for prefix, f in (lr_scales or {}).items() if f != 1.0}
    owner = {n: next((prefix for prefix in scaled if n.startswith(prefix)), None) for n, _ in named}
    groups = []
    for prefix in (None, *scaled):
        params = [p for n, p in named if owner[n] == prefix]
        if prefix is not None and not params:
            continue
        tag = "" if prefix is None else prefix.rstrip(".") + "/"
        extra = {} if prefix is None else {"lr_scale": scaled[prefix]}
        # named, so the learning-rate monitor logs lr-<optimizer>/decay, lr-<optimizer>/fusion/decay, ...
        groups += [
            {"params": [p for p in params if p.ndim >= 2], "name": f"{tag}decay", **extra},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "name": f"{tag}no_decay", **extra},
        ]
    return groups


def scale_learning_rates(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Multiply each parameter group's learning rate by its ``lr_scale`` (`parameter_groups`),
    before a scheduler records the groups' initial rates."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return optimizer
