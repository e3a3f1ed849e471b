"""Learning-rate schedules stepped per optimizer step."""

from __future__ import annotations

import math
from typing import Any

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
    the count comes from the datamodule's ``train_batches_per_epoch`` where it has one."""
    datamodule: Any = getattr(trainer, "datamodule", None)
    if trainer.max_steps is not None and trainer.max_steps > 0:
        return trainer.max_steps
    if not hasattr(datamodule, "train_batches_per_epoch") or trainer.max_epochs is None or trainer.max_epochs < 0:
        return int(trainer.estimated_stepping_batches)
    per_epoch = datamodule.train_batches_per_epoch()  # within trainer.limit_train_batches
    return max(1, math.ceil(per_epoch / trainer.accumulate_grad_batches) * trainer.max_epochs)


def parameter_groups(module) -> list[dict]:
    """Trainable parameters in two groups: matrices decay, vectors (biases, norms,
    temperatures) do not."""
    params = [p for p in module.parameters() if p.requires_grad]
    # named, so the learning-rate monitor logs lr-<optimizer>/decay and lr-<optimizer>/no_decay
    return [
        {"params": [p for p in params if p.ndim >= 2], "name": "decay"},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "name": "no_decay"},
    ]
