"""What each DataLoader worker does first (`WorkerInit`).

A scheduler stops a job by signalling its whole process group (SLURM's time limit and
``scancel``, ``timeout``, ``kill -- -PGID``). A loader worker that dies of that SIGTERM makes
the main process's loop fail ("DataLoader worker ... is killed by signal") before Lightning's
handler can stop between two steps and save ``last.ckpt``. So a worker leaves stopping to the
process that started it: it ignores SIGINT, and ignores SIGTERM until that process is exiting.

The exception matters. When a process exits, ``multiprocessing`` terminates every live daemonic
child with SIGTERM and then *joins* it: the persistent workers of any loader still referenced
(a Trainer a notebook or a test keeps). A worker that ignored every SIGTERM made that join wait
forever: the work was done and the interpreter never exited. So every process carries an exit
mark in shared memory, set by a ``multiprocessing`` finalizer, which runs first in that exit
path (``util._exit_function``: at interpreter exit, and at the end of a process ``multiprocessing``
started, e.g. a forked DDP rank); a worker's SIGTERM handler exits once its parent's mark is set.

A forked worker inherits its parent's mark; a spawned one (``spawn``, ``forkserver``: macOS's
default) gets it through its ``worker_init_fn``, which is pickled while the parent starts it.

Then Lightning's worker seeding, exactly as Lightning adds it to a loader that has no
``worker_init_fn`` of its own (``seed_everything(workers=True)``).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.util
import os
import signal
from typing import Any

from lightning.fabric.utilities.seed import pl_worker_init_function


class _ExitMarks:
    """This process's exit mark (``own``) and, in a forked child, its parent's (``parent``)."""

    def __init__(self) -> None:
        self.own: Any = None
        self.parent: Any = None
        self.renew()

    def renew(self) -> None:
        """In a new process: the mark inherited from the parent becomes ``parent``, and this
        process gets its own, set when it starts to exit."""
        self.parent, self.own = self.own, multiprocessing.RawValue("b", 0)
        multiprocessing.util.Finalize(None, _set, args=(self.own,), exitpriority=100)


def _set(mark) -> None:
    mark.value = 1


_MARKS = _ExitMarks()
# after a fork by multiprocessing (loader workers, forked DDP ranks), once its finalizers are cleared
multiprocessing.util.register_after_fork(_MARKS, _ExitMarks.renew)


class WorkerInit:
    """``worker_init_fn`` of vlr's loaders; ``rank``: the global rank Lightning would pass."""

    def __init__(self, rank: int = 0):
        self.rank = rank
        self.parent_mark: Any = None  # set in a spawned worker (see __getstate__)

    def __getstate__(self) -> dict:
        # pickled while a process starts a spawned worker: the worker gets that process's mark
        # (shared memory can be passed only then; other pickling leaves it out)
        spawning = multiprocessing.context.get_spawning_popen() is not None
        return {"rank": self.rank, "parent_mark": _MARKS.own if spawning else None}

    def __call__(self, worker_id: int) -> None:
        leave_stop_signals_to_parent(self.parent_mark if self.parent_mark is not None else _MARKS.parent)
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)


def leave_stop_signals_to_parent(parent_mark) -> None:
    """In a worker: ignore SIGINT, and SIGTERM until ``parent_mark`` (the exit mark of the process
    that started this worker) is set. Without a mark, SIGTERM keeps its default action."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent_mark is None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return

    def on_sigterm(signum, frame) -> None:
        if parent_mark.value:
            # at once, as the default action would, but with status 0: the loader's SIGCHLD
            # handler in the parent reports a worker killed by a signal as a failed worker
            os._exit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
