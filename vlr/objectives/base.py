"""The objective plugin interface.

An objective is a small module over L2-normalised, rank-local embeddings. It gathers
what it needs with `vlr.objectives.distributed` and returns named, already-weighted loss terms; the
training step optimises their sum and logs each one.

One training method per objective, `Objective.batch_terms(encoder, batch, reference)`:
the base implementation embeds the batch with the encoder, looks up the reference rows
when the objective distils (``needs_reference``), and calls ``forward``. An objective
that needs more than one forward pass (CoVLR's virtual step) overrides it, with the
encoder and reference it is given. Objectives know nothing of the training loop: epoch
schedules are plain data (`Objective.set_epoch`, `Objective.stages`) that the loop's
callbacks (`vlr.callbacks.ObjectiveSchedule`) act on.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.objectives.temperature import Temperature
from vlr.registry import Registry

OBJECTIVES: Registry = Registry("objective")


@dataclass(frozen=True)
class Stages:
    """A two-stage schedule: stage 2 starts at epoch ``stage2_epoch``, from the best stage-1
    checkpoint when ``from_best``; checkpoint selection counts stage-2 epochs only."""

    stage2_epoch: int
    from_best: bool


def reference_rows(reference: Any, batch: dict, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The reference's rows for a training batch, in the model's dtype (feature files hold
    float32; a 64-true run computes in float64)."""
    return {kind: reference.embed(kind, "train", batch).to(dtype) for kind in ("image", "text")}


class Objective(nn.Module):
    needs_reference: bool = False  # True: forward also receives the batch's reference embeddings
    itm_weight: float = 2.0  # the ITM term's weight when model.fusion is on (the SAD release's)

    def forward(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        image_ids: torch.Tensor,
        reference: dict[str, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named loss terms for one step. ``image_ids[k]`` identifies the image of pair k, so
        several captions of one image in a (global) batch are recognised as positives.
        ``reference`` holds ``image`` and ``text`` reference embeddings of the same rows."""
        raise NotImplementedError

    def batch_terms(self, encoder: nn.Module, batch: dict, reference: Any) -> dict[str, torch.Tensor]:
        """The loss terms of a training batch for ``encoder`` (a `DualEncoder`), with ``reference``
        (the run's reference, see `vlr.reference`)."""
        image_emb, text_emb = encoder(batch["images"], batch["input_ids"], batch["attention_mask"])
        return self.embedding_terms(image_emb, text_emb, batch, reference)

    def embedding_terms(
        self, image_emb: torch.Tensor, text_emb: torch.Tensor, batch: dict, reference: Any
    ) -> dict[str, torch.Tensor]:
        """The base ``batch_terms`` after its one forward pass (a caller that already embedded the
        batch, the fusion step, starts here)."""
        rows = None
        if self.needs_reference:
            if reference is None:
                raise ValueError(f"objective {type(self).__name__} needs a reference")
            rows = reference_rows(reference, batch, image_emb.dtype)
        return self(image_emb, text_emb, batch["image_idx"], reference=rows)

    def bind_reference(self, image_dim: int, text_dim: int, embed_dim: int) -> None:
        """Called once by the module, before any step, with the reference's feature sizes and the
        encoder's embedding size: an objective with parameters of its own sizes them from these,
        never from another config group."""

    def set_epoch(self, epoch: int, max_epochs: int | None) -> None:
        """The epoch about to train (0-based) and the run's epoch count, for schedules over epochs
        (SAD's stages, triplet's warm-up); like a sampler's ``set_epoch``."""

    def stages(self, max_epochs: int | None) -> Stages | None:
        """The objective's two-stage schedule for a run of ``max_epochs``, or None (one stage)."""
        return None

    def apply_bounds_(self) -> None:
        """Called after every optimizer step: bounds are applied to parameters here, in place
        (temperatures, X-VLM style), so the loss itself never cuts their gradient."""
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


def _takes(factory, option: str) -> bool:
    """Whether ``factory`` accepts the keyword ``option`` (a ``**kwargs`` passes it on: assumed so)."""
    parameters = inspect.signature(factory).parameters
    return option in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def create_objective(name: str, cls: str | None = None, **kwargs) -> Objective:
    """Hydra entry point: ``_target_: vlr.objectives.create_objective`` with ``name`` (the
    registry key, and the name runs are known by) and the objective's constructor arguments.

    ``cls``: an `Objective` subclass by dotted path (``mypkg.losses.MyObjective``), for an
    objective that lives in your own package; ``name`` then only names the runs."""
    check_loss_options(kwargs)
    # the ITM term's weight (model.fusion only; `vlr.models.with_fusion`): kept on the objective,
    # not a constructor argument, so every objective takes it
    itm_weight = kwargs.pop("itm_weight", None)
    objective = _create(name, cls, **kwargs)
    if itm_weight is not None:
        objective.itm_weight = float(itm_weight)
    return objective


def _create(name: str, cls: str | None, **kwargs) -> Objective:
    if cls is None:
        if kwargs.get("local_loss") and not _takes(OBJECTIVES.get(name), "local_loss"):
            raise ConfigError(
                f"objective.local_loss=true: objective={name} has no contrastive term to split by rank "
                "(infonce, relation_kd, covlr and sad have one)"
            )
        return OBJECTIVES.create(name, **kwargs)
    from hydra.utils import get_class

    objective_class = get_class(cls)
    if not (isinstance(objective_class, type) and issubclass(objective_class, Objective)):
        raise ConfigError(f"objective.cls={cls} is not a subclass of vlr.objectives.Objective")
    return objective_class(**kwargs)
