"""Durable writes: every file a later run reads appears whole or not at all.

``atomic_write`` writes to a temporary name in the target's own folder, flushes and
fsyncs it, then renames it over the target (a rename within one filesystem is atomic)
and fsyncs the folder. The previous file survives until the new one is complete, and a
kill at any moment leaves either the old file or the new one. Lightning's own
``_atomic_save`` writes to ``$TMPDIR`` and moves the file: across filesystems (node-local
tmp on clusters) that move is a copy over the old checkpoint, and a kill during it leaves
a truncated file.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from vlr.errors import UserError


class SaveError(UserError, OSError):
    """A file vlr must write (a checkpoint, a cache) could not be written."""


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass  # the folder itself is the problem: there is no temporary file


def _torch_write_reason(err: RuntimeError) -> str:
    """torch's serializer reports a short write as ``[enforce fail at inline_container.cc:N] .
    unexpected pos A vs B``: say what that means; other messages as they are."""
    text = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    if "unexpected pos" in text:
        return f"the write stopped short (a full disk or a file-size limit?): {text}"
    return text


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], what: str = "file") -> Path:
    """Write ``path`` through ``write(binary file)`` atomically and durably; raise `SaveError`
    naming the path and the reason when it cannot be written (nothing is left behind)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        _discard(tmp)
        raise SaveError(f"cannot write {what} {path}: {err.strerror or err}") from None
    except RuntimeError as err:  # torch.save wraps the writer's OSError (a full disk, a file-size limit)
        _discard(tmp)
        raise SaveError(f"cannot write {what} {path}: {_torch_write_reason(err)}") from None
    except BaseException:
        _discard(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str, what: str = "file") -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode()), what)
