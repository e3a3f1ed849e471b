"""The objective plugin interface.

An objective is a small module over L2-normalised, rank-local embeddings. It
gathers what it needs with `vlr.distributed` and returns named, already-weighted
loss terms; the training step optimises their sum and logs each one.

One escape hatch: an objective that must own the whole training step (a meta
objective that takes a virtual step) sets ``owns_training_step = True`` and
implements ``training_step(module, batch)``. Nothing else is special-cased.
"""

from __future__ import annotations

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.registry import Registry

OBJECTIVES: Registry = Registry("objective")


class Objective(nn.Module):
    owns_training_step: bool = False
    needs_teacher: bool = False  # True: forward also receives the batch's reference embeddings
    # Which reference the module builds (``objective.teacher``; see `vlr.reference`). Every
    # objective has one, because evaluation's overlap@k is measured against it.
    teacher: str = "frozen_init"
    teacher_features: str | None = None

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        image_ids: torch.Tensor,
        teacher: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms for one step. ``image_ids[k]`` identifies the image of pair k, so
        several captions of one image in a (global) batch are recognised as positives.
        ``teacher`` holds ``image`` and ``text`` reference embeddings of the same rows."""
        raise NotImplementedError

    def bind_reference(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        """Called once by the module, before any step, with the reference's feature sizes and the
        encoder's embedding size: an objective with parameters of its own sizes them from these,
        never from another config group."""

    def set_max_epochs(self, max_epochs: int | None) -> None:
        """Called by the module when fitting starts, with ``trainer.max_epochs`` (epoch schedules)."""

    def on_train_epoch_start(self, epoch: int) -> None:
        """Called by the module at the start of every training epoch (schedules over epochs)."""

    # an epoch at whose start the module restores the best checkpoint so far (SAD's stage 2)
    restore_best_at_epoch: int | None = None
    # the first epoch whose validations count for the best checkpoint (SAD's stage 2); 0: all
    selection_from_epoch: int = 0

    def training_step(self, module, batch: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not own the training step")

    def after_optimizer_step(self) -> None:
        """Called by the module after every optimizer step: bounds are applied to parameters here,
        in place (temperatures, X-VLM style), so the loss itself never cuts their gradient."""
        from vlr.objectives.infonce import Temperature

        for module in self.modules():
            if isinstance(module, Temperature):
                module.clamp_()

    def log_values(self) -> dict[str, float]:
        """Scalars worth logging besides the loss terms (temperatures, learned weights)."""
        return {}


def check_loss_options(options: dict, prefix: str = "objective") -> None:
    """Loss weights must be >= 0 and temperatures > 0 (a negative weight would maximise a loss,
    a non-positive temperature divides by zero or flips every similarity): one line naming the option."""
    for key, value in options.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            check_loss_options(value, name)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if "temperature" in name and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")
            if ("weight" in name or key in ("alpha", "beta")) and value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")


def create_objective(
    name: str, teacher: str = "frozen_init", teacher_features: str | None = None, **kwargs
) -> Objective:
    """Hydra entry point: ``_target_: vlr.objectives.create_objective`` with ``name`` and arguments.

    ``teacher`` / ``teacher_features`` choose the reference (read by the module), the rest
    go to the objective's constructor."""
    check_loss_options(kwargs)
    objective = OBJECTIVES.create(name, **kwargs)
    objective.teacher, objective.teacher_features = teacher, teacher_features
    return objective
