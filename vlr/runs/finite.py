"""Non-finite weights (parameters, or buffers such as running statistics) end a run in one line:
the error and the check that the model (its ``trainer.skip_nonfinite`` guard,
`vlr.models.nonfinite`), `LastCheckpoint` (never saved, never validated) and the end of
training (`vlr.runs.stopping`) share."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from vlr.errors import UserError


class NonFiniteError(UserError, FloatingPointError):
    """Training produced a non-finite loss (not skipped) or non-finite parameters."""


def nonfinite_parameters(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the tensors that hold a NaN or an infinity."""
    return [name for name, p in named if not bool(torch.isfinite(p.detach()).all())]


def nonfinite_state(module: torch.nn.Module) -> list[str]:
    """The parameters and persistent floating-point buffers of ``module`` that hold a NaN or an
    infinity: a BatchNorm's running statistics overflow while every parameter is still finite,
    and an evaluation (eval mode) then embeds everything as NaN. Non-persistent buffers (those
    not in the state dict) are constants built with the module, such as open_clip's causal
    attention mask, whose -inf entries are meant."""
    persistent = module.state_dict(keep_vars=True)
    buffers = ((name, b) for name, b in module.named_buffers() if name in persistent and b.is_floating_point())
    return nonfinite_parameters(module.named_parameters()) + nonfinite_parameters(buffers)


def describe(names: list[str]) -> str:
    """A few of ``names`` for a one-line message."""
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
