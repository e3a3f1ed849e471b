"""`RunLock`: one process trains in a run folder at a time.

Two processes in one folder would both "resume", interleave their CSV rows and delete each
other's checkpoint writes in flight. ``<run dir>/run.lock`` holds the process id and host of
the run that holds the folder; a second process refuses the folder in one line naming them.
A lock whose process is gone (same host, no such process: a SIGKILL, a crash) is stale: it is
taken over with a warning. A lock of another host cannot be checked from here: it is refused,
and the message says to delete it when that run is known to be gone.

Only the process that starts a run takes the lock: Lightning's DDP children (and the ranks a
launcher such as torchrun starts) carry ``LOCAL_RANK``/``RANK`` > 0 in their environment and
join the folder their rank 0 holds.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

from vlr.errors import UserError
from vlr.runs.leftovers import process_alive

log = logging.getLogger(__name__)
LOCK_FILE = "run.lock"
_HELD: set[Path] = set()  # the locks this process holds (a lock of this pid held by no one here is stale)


class RunFolderInUse(UserError, RuntimeError):
    """Another live process trains in this run folder."""


def is_launched_rank() -> bool:
    """Whether this process is a non-zero rank another process of the same run started."""
    return any(int(os.environ.get(key, "0") or 0) > 0 for key in ("LOCAL_RANK", "RANK"))


class RunLock:
    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_FILE
        self.held = False

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written, or damaged: treated as a lock of unknown holder
        return holder if isinstance(holder, dict) else {}

    def acquire(self) -> None:
        """Take the folder, or raise `RunFolderInUse` naming the process that holds it."""
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released meanwhile
                raw, host = holder.get("pid"), holder.get("host")
                pid = raw if isinstance(raw, int) and raw > 0 else None  # 0 and negative ids name process groups
                mine = pid == me["pid"] and self.path.resolve() not in _HELD  # pid reused, e.g. a requeued container
                gone = pid is not None and pid != me["pid"] and not process_alive(pid)
                if host == me["host"] and pid is not None and (mine or gone):
                    log.warning("%s: process %d of %s is gone; taking over its run folder", self.path, pid, host)
                    self.path.unlink(missing_ok=True)
                    continue
                where = f"process {pid} on {host}" if pid is not None else "an unknown process"
                raise RunFolderInUse(
                    f"{self.path.parent} is in use by {where} (lock {self.path}); wait for it to end, "
                    f"use another hydra.run.dir, or delete {self.path} if that process is gone"
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me) + "\n")
            self.held = True
            _HELD.add(self.path.resolve())
            return
        raise RunFolderInUse(f"{self.path.parent}: could not take {self.path} (other processes race for it)")

    def release(self) -> None:
        """Give the folder back (only a lock this process holds is removed)."""
        if self.held and (self._holder() or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        _HELD.discard(self.path.resolve())
        self.held = False
