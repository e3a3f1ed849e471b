"""Reading checkpoints a user points at, with errors that name the file and what does not fit.

Lightning would fail deep inside ``trainer.fit``/``test`` with an unpickling traceback or a
``load_state_dict`` dump; these checks run before, and end the command with one line.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlr.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the configured model."""


def read_checkpoint(path: str | Path, option: str = "ckpt_path") -> dict:
    """The checkpoint's contents (``weights_only=True``: plain data only, no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{option}={path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or holds objects that need pickle
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{option}={path} is not a readable checkpoint ({reason[:200]})") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{option}={path} is not a Lightning checkpoint of vlr (it has no 'state_dict')")
    return checkpoint


def mismatched_tensors(module: nn.Module, state_dict: dict) -> list[str]:
    """Human-readable differences between ``module``'s parameters/buffers and ``state_dict``."""
    own = module.state_dict()
    problems = [f"{k} missing" for k in own if k not in state_dict]
    problems += [f"{k} unexpected" for k in state_dict if k not in own]
    problems += [
        f"{k} shape {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    return problems


def check_state_fits(module: nn.Module, state_dict: dict, path: str | Path, option: str = "ckpt_path") -> None:
    """Raise `CheckpointError` naming the mismatched tensors when ``state_dict`` cannot load into ``module``."""
    state_dict = getattr(module, "loadable_state_dict", lambda state: state)(state_dict)
    problems = mismatched_tensors(module, state_dict)
    if problems:
        shown = "; ".join(problems[:6]) + (f"; ... {len(problems) - 6} more" if len(problems) > 6 else "")
        raise CheckpointError(
            f"{option}={path} does not fit the configured model ({len(problems)} tensors differ: {shown}); "
            "choose the model= / objective= the checkpoint was trained with"
        )
