"""`NonFiniteGuard`: what a training step does with a non-finite loss (``trainer.skip_nonfinite``)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


class NonFiniteGuard:
    """Stop, naming the step and the term, or skip the step and count it.

    The loss is computed over the gathered global batch, so every rank sees the same value
    and all of them skip together (no rank waits in a collective alone). The count travels
    in checkpoints (`state_dict`), so a resumed run keeps counting."""

    def __init__(self, skip: bool = False):
        self.skip, self.skipped = bool(skip), 0

    def __call__(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], where: str | Callable[[], str]) -> bool:
        """True when the step should go on; raises or counts a skip otherwise. ``where`` names the
        step (or builds the name: it is only needed when the loss is not finite)."""
        if bool(torch.isfinite(loss)):
            return True
        where = where() if callable(where) else where
        bad = [f"{k}={float(v.detach())}" for k, v in terms.items() if not bool(torch.isfinite(v))]
        if not self.skip:
            raise FloatingPointError(
                f"non-finite loss at {where}: {', '.join(bad)}; trainer.skip_nonfinite=true skips such steps"
            )
        self.skipped += 1
        log.warning("skipping %s: non-finite loss terms %s (%d skipped so far)", where, ", ".join(bad), self.skipped)
        return False

    def state_dict(self) -> dict:
        return {"skipped": self.skipped}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = int(state.get("skipped", 0))
