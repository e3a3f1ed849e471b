"""Checkpoints: the version stamp every one carries, and reading those a user points at, with
errors that name the file and what does not fit.

Lightning would fail deep inside ``trainer.fit``/``test`` with an unpickling traceback or a
``load_state_dict`` dump; these checks run before, and end the command with one line.

vlr does not migrate checkpoints of other versions: each checkpoint carries the vlr version
that wrote it and ``CHECKPOINT_FORMAT``, and one written in another format is refused in one
line naming both versions. Raise ``CHECKPOINT_FORMAT`` whenever what a checkpoint holds
changes (a state key renamed, a tensor added or removed).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vlr import __version__
from vlr.errors import UserError

CHECKPOINT_FORMAT = 1
VERSION_KEY, FORMAT_KEY = "vlr_version", "vlr_checkpoint_format"


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
    written = checkpoint.get(FORMAT_KEY, 0)  # 0: a checkpoint of a vlr that stamped none
    if written != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by vlr {checkpoint.get(VERSION_KEY, 'unknown')} (checkpoint format {written}); "
            f"this is vlr {__version__} (format {CHECKPOINT_FORMAT})"
        )
    return checkpoint


def stamp(checkpoint: dict) -> dict:
    """``checkpoint`` with the vlr version and checkpoint format that `read_checkpoint` checks."""
    return {**checkpoint, VERSION_KEY: __version__, FORMAT_KEY: CHECKPOINT_FORMAT}


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
