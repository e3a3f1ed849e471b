"""`NonFiniteGuard`: what a training step does with a non-finite loss (``trainer.skip_nonfinite``).

Skipping helps over a bad batch, never over weights that are themselves non-finite: every later
loss is NaN too, and a run would skip to its end and save them. So a skip first checks the
parameters (`watch`), and non-finite ones end the run in one line naming them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import torch

from vlr.runs.finite import NonFiniteError, describe, nonfinite_parameters

log = logging.getLogger(__name__)
__all__ = ["NonFiniteError", "NonFiniteGuard"]


class NonFiniteGuard:
    """Stop, naming the step and the term, or skip the step and count it.

    The loss is computed over the gathered global batch, so every rank sees the same value
    and all of them skip together (no rank waits in a collective alone). The count travels
    in checkpoints (`state_dict`), so a resumed run keeps counting."""

    def __init__(self, skip: bool = False):
        self.skip, self.skipped = bool(skip), 0
        self.parameters: Callable[[], Iterable[tuple[str, torch.Tensor]]] | None = None

    def watch(self, named_parameters: Callable[[], Iterable[tuple[str, torch.Tensor]]]) -> None:
        """The parameters a skip checks first (e.g. a module's ``named_parameters``)."""
        self.parameters = named_parameters

    def __call__(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], where: str | Callable[[], str]) -> bool:
        """True when the step should go on; raises or counts a skip otherwise. ``where`` names the
        step (or builds the name: it is only needed when the loss is not finite)."""
        if bool(torch.isfinite(loss)):
            return True
        where = where() if callable(where) else where
        bad = [f"{k}={float(v.detach())}" for k, v in terms.items() if not bool(torch.isfinite(v))]
        if not self.skip:
            raise NonFiniteError(
                f"non-finite loss at {where}: {', '.join(bad)}; trainer.skip_nonfinite=true skips such steps"
            )
        broken = nonfinite_parameters(self.parameters()) if self.parameters is not None else []
        if broken:
            raise NonFiniteError(
                f"the parameters are non-finite at {where} ({describe(broken)}): skipping steps cannot recover; "
                "resume from an earlier checkpoint with a lower learning rate"
            )
        self.skipped += 1
        log.warning("skipping %s: non-finite loss terms %s (%d skipped so far)", where, ", ".join(bad), self.skipped)
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
