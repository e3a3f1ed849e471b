"""Temporary folders of killed processes, removed when the next run starts.

vlr builds what it caches (the synthetic data, a trained WordPiece, a learned reference) in
``<target>.tmp<pid>`` beside the target and renames it into place when complete. A process
killed on the way leaves that folder behind; nothing else would ever remove it. A leftover is
removed only when its process is gone (no process with that id on this machine) and it has
not changed for `QUIET_S` seconds: on a filesystem shared between machines, a pid absent here
may be building on another node, and its folder keeps changing while it does.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from pathlib import Path

log = logging.getLogger("vlr")

LEFTOVER = re.compile(r".+\.tmp(\d+)$")
QUIET_S = 15 * 60


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists here (one of another user counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_leftovers(folder: Path, now: float | None = None) -> list[Path]:
    """The ``*.tmp<pid>`` entries of ``folder`` whose process is gone and that have been quiet
    for `QUIET_S` seconds."""
    now = time.time() if now is None else now
    found = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = LEFTOVER.fullmatch(entry.name)
        if not match or int(match[1]) == os.getpid() or process_alive(int(match[1])):
            continue
        try:
            quiet = now - entry.lstat().st_mtime >= QUIET_S
        except OSError:
            continue
        if quiet:
            found.append(entry)
    return found


def vlr_temp_folders(cfg) -> list[Path]:
    """Where vlr builds in ``.tmp<pid>`` folders: beside the synthetic data (and in its learned
    reference's folder) and in the tokenizer cache."""
    folders = [Path(cfg.paths.cache_dir) / "tokenizers"]
    data = cfg.get("data") or {}
    if data.get("source") == "synthetic" and data.get("root"):
        root = Path(str(data.get("root")))
        folders += [root.parent, root / "learned_reference"]
    return folders


def clean_leftovers(folders: list[Path]) -> list[Path]:
    """Remove the dead leftovers of ``folders``; return what was removed (a failure to remove
    one is not an error: it is only space)."""
    removed = []
    for folder in folders:
        for entry in dead_leftovers(folder):
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except OSError as err:
                log.warning("cannot remove the leftover %s of a killed process: %s", entry, err)
                continue
            log.info("removed the leftover %s of a killed process", entry)
            removed.append(entry)
    return removed
