"""`NonFiniteGuard`: what a training step does with a non-finite loss (``trainer.skip_nonfinite``).

Skipping helps over a bad batch, never over weights that are themselves non-finite: every later
loss is NaN too, and a run would skip to its end and save them. So a skip first checks the
parameters and buffers (`watch`), and non-finite ones end the run in one line naming them.
Weights can also be finite and still broken (an update of 1e30 leaves every parameter finite
and every output overflowing): `MAX_SKIPS_IN_A_ROW` non-finite losses in a row end the run too,
since a bad batch does not repeat on every batch."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from vlr.runs.finite import NonFiniteError, describe, nonfinite_state

log = logging.getLogger(__name__)
__all__ = ["MAX_SKIPS_IN_A_ROW", "NonFiniteError", "NonFiniteGuard"]
MAX_SKIPS_IN_A_ROW = 10


class NonFiniteGuard:
    """Stop, naming the step and the term, or skip the step and count it.

    The loss is computed over the gathered global batch, so every rank sees the same value
    and all of them skip together (no rank waits in a collective alone). The count travels
    in checkpoints (`state_dict`), so a resumed run keeps counting."""

    def __init__(self, skip: bool = False):
        self.skip, self.skipped = bool(skip), 0
        self.in_a_row = 0  # skips since the last finite loss
        self.module: torch.nn.Module | None = None

    def watch(self, module: torch.nn.Module) -> None:
        """The module whose parameters and buffers a skip checks first."""
        self.module = module

    def __call__(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], where: str | Callable[[], str]) -> bool:
        """True when the step should go on; raises or counts a skip otherwise. ``where`` names the
        step (or builds the name: it is only needed when the loss is not finite)."""
        if bool(torch.isfinite(loss)):
            self.in_a_row = 0
            return True
        where = where() if callable(where) else where
        bad = [f"{k}={float(v.detach())}" for k, v in terms.items() if not bool(torch.isfinite(v))]
        if not self.skip:
            raise NonFiniteError(
                f"non-finite loss at {where}: {', '.join(bad)}; trainer.skip_nonfinite=true skips such steps"
            )
        broken = nonfinite_state(self.module) if self.module is not None else []
        if broken:
            raise NonFiniteError(
                f"the parameters are non-finite at {where} ({describe(broken)}): skipping steps cannot recover; "
                "resume from an earlier checkpoint with a lower learning rate"
            )
        self.skipped += 1
        self.in_a_row += 1
        if self.in_a_row >= MAX_SKIPS_IN_A_ROW:
            params = list(self.module.parameters()) if self.module is not None else []
            largest = max((float(p.detach().abs().max()) for p in params if p.numel()), default=float("nan"))
            raise NonFiniteError(
                f"{self.in_a_row} steps in a row had a non-finite loss (the last at {where}: {', '.join(bad)}) with "
                f"finite parameters (largest |value| {largest:.3g}): the model's outputs overflow, and skipping "
                "cannot recover; resume from an earlier checkpoint with a lower learning rate"
            )
        log.warning("skipping %s: non-finite loss terms %s (%d skipped so far)", where, ", ".join(bad), self.skipped)
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
