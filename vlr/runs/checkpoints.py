"""Checkpoints: the version stamp every one carries, and reading those a user points at, with
errors that name the file and what does not fit.

Lightning would fail deep inside ``trainer.fit``/``test`` with an unpickling traceback or a
``load_state_dict`` dump; these checks run before, and end the command with one line.

vlr does not migrate checkpoints of other versions: each checkpoint carries the vlr version
that wrote it and ``CHECKPOINT_FORMAT``, and one written in another format is refused in one
line naming both versions. Raise ``CHECKPOINT_FORMAT`` whenever what a checkpoint holds
changes (a state key renamed, a tensor added or removed).

Every checkpoint also carries the SHA-256 of its tensors (``vlr_sha256``: each tensor's place
in the checkpoint, dtype, shape and bytes, in a fixed order), computed as it is written and
verified whenever it is read (`read_checkpoint`, and `vlr.callbacks.AtomicCheckpointIO` for
what Lightning loads itself): zeroed or flipped bytes inside a weight or an optimizer state
unpickle fine, and without it would train or evaluate on silently. The checksum lives inside
the file, so a kill between two writes never leaves a checkpoint and a checksum that disagree.
Format 2: the checksum and the run's resolved configuration (``vlr_config``).
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlr import __version__
from vlr.errors import UserError

CHECKPOINT_FORMAT = 2
VERSION_KEY, FORMAT_KEY = "vlr_version", "vlr_checkpoint_format"
CHECKSUM_KEY, CONFIG_KEY = "vlr_sha256", "vlr_config"


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
        raise CheckpointError(f"{option}={path} is not a readable checkpoint: {why_unreadable(path, err)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{option}={path} is not a Lightning checkpoint of vlr (it has no 'state_dict')")
    written = checkpoint.get(FORMAT_KEY, 0)  # 0: a checkpoint of a vlr that stamped none
    if written != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} was written by vlr {checkpoint.get(VERSION_KEY, 'unknown')} (checkpoint format {written}); "
            f"this is vlr {__version__} (format {CHECKPOINT_FORMAT})"
        )
    verify_checksum(checkpoint, path)
    return checkpoint


def _first_sentence(err: BaseException) -> str:
    """The first sentence of ``err``'s message, whole (torch's run on for lines)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0].rstrip(".")


def why_unreadable(path: Path, err: BaseException) -> str:
    """What is wrong with a file ``torch.load`` could not read, in words of our own: torch's own
    messages for a damaged zip are an errno, a bare number, or a paragraph about weights_only."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as os_err:
        return f"it cannot be read ({os_err.strerror or os_err})"
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        return "it does not start with a zip header (not a file torch.save wrote, or its first bytes are damaged)"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, KeyError) as zip_err:
        return f"its zip structure is damaged or truncated ({_first_sentence(zip_err)})"
    if bad is not None:
        return f"its zip member {bad} is damaged (CRC mismatch)"
    if str(err).startswith("Weights only load failed"):
        return "it holds objects that only a full unpickling would load (vlr reads checkpoints weights_only)"
    return _first_sentence(err)


def _tensors(node: Any, where: str = ""):
    """``(place, tensor)`` for every tensor in ``node``, in an order that survives a save and load
    (mapping keys sorted by their text, sequences by index)."""
    if isinstance(node, torch.Tensor):
        yield where, node
    elif isinstance(node, Mapping):
        for key in sorted(node, key=str):
            if not (where == "" and key == CHECKSUM_KEY):
                yield from _tensors(node[key], f"{where}/{key}")
    elif isinstance(node, (list, tuple)):
        for i, item in enumerate(node):
            yield from _tensors(item, f"{where}[{i}]")


def checksum(checkpoint: Mapping) -> str:
    """SHA-256 of every tensor of ``checkpoint`` (its place, dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for where, tensor in _tensors(checkpoint):
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{where}:{flat.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return digest.hexdigest()


def verify_checksum(checkpoint: Mapping, path: str | Path) -> None:
    """Raise `CheckpointError` naming ``path`` when its tensors differ from the checksum written with them."""
    if checksum(checkpoint) != checkpoint.get(CHECKSUM_KEY):
        raise CheckpointError(
            f"{path} is damaged: its tensors do not match the SHA-256 written with them (a disk or copy error?); "
            "use another checkpoint"
        )


def stamp(checkpoint: dict, config: dict | None = None) -> dict:
    """``checkpoint`` with the vlr version, checkpoint format and checksum that `read_checkpoint`
    checks, and ``config`` (the run's resolved configuration) when given."""
    stamped = {**checkpoint, VERSION_KEY: __version__, FORMAT_KEY: CHECKPOINT_FORMAT}
    if config is not None:
        stamped[CONFIG_KEY] = config
    return {**stamped, CHECKSUM_KEY: checksum(stamped)}


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
