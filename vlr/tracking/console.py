"""What a run prints depends on who reads it: a person at a terminal, or a file (nohup, SLURM,
a pipe). A redirected run gets plain lines only: no progress bar (a Rich bar redraws in place,
and a file keeps only its last frame, written when the run ends) and no W&B summary block;
`vlr.callbacks.ProgressLog` writes one line per epoch instead, to the console and train.log."""

from __future__ import annotations

import sys
from typing import Any

from lightning.pytorch.callbacks import ProgressBar


def interactive() -> bool:
    """Whether standard output is a terminal."""
    try:
        return bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def plain_when_redirected(trainer_options: dict[str, Any], callbacks: list) -> list:
    """``trainer_options`` (the Trainer's arguments, changed in place) and ``callbacks`` without
    any progress bar when the output is not a terminal; as given otherwise."""
    if interactive():
        return callbacks
    trainer_options["enable_progress_bar"] = False
    return [c for c in callbacks if not isinstance(c, ProgressBar)]


def wandb_settings(given: Any = None) -> Any:
    """W&B run settings (``given``: the user's, a dict or ``wandb.Settings``) that keep W&B to
    its essential lines when the output is not a terminal (``quiet``: no run summary or
    history block at the end)."""
    if interactive():
        return given
    import wandb

    if given is None:
        return wandb.Settings(quiet=True)
    if isinstance(given, dict):
        return {"quiet": True, **given}
    return given.model_copy(update={"quiet": True})
