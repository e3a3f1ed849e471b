"""What each DataLoader worker does first (`WorkerInit`).

A scheduler stops a job by signalling its whole process group (SLURM's time limit and
``scancel``, ``timeout``, ``kill -- -PGID``). A loader worker that dies of that SIGTERM makes
the main process's loop fail ("DataLoader worker ... is killed by signal") before Lightning's
handler can stop between two steps and save ``last.ckpt``. So a worker leaves stopping to the
main process: it ignores SIGINT, and ignores SIGTERM until the main process is exiting.

The exception matters. At interpreter exit ``multiprocessing`` terminates every live daemonic
child with SIGTERM and then *joins* it: the persistent workers of any loader still referenced
(a Trainer a notebook or a test keeps). A worker that ignored every SIGTERM made that join
wait forever: the work was done and the interpreter never exited. So the main process marks
its exit in shared memory (an ``atexit`` hook, which runs before ``multiprocessing``'s own
because it is registered after it) and a worker's SIGTERM handler exits once it is marked.

The mark is inherited by forked workers (Linux's default start method). A worker started
another way (``spawn``, ``forkserver``) keeps the default SIGTERM.

Then Lightning's worker seeding, exactly as Lightning adds it to a loader that has no
``worker_init_fn`` of its own (``seed_everything(workers=True)``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.util  # noqa: F401  (its exit hook first, so ours runs before it)
import os
import signal

from lightning.fabric.utilities.seed import pl_worker_init_function

_MAIN_PID = os.getpid()  # the process that owns the mark: a forked worker inherits both
_MAIN_EXITING = multiprocessing.RawValue("b", 0)


@atexit.register
def _mark_main_exiting() -> None:
    if os.getpid() == _MAIN_PID:
        _MAIN_EXITING.value = 1


class WorkerInit:
    """``worker_init_fn`` of vlr's loaders; ``rank``: the global rank Lightning would pass."""

    def __init__(self, rank: int = 0):
        self.rank = rank
        self.main_pid = os.getpid()

    def __call__(self, worker_id: int) -> None:
        leave_stop_signals_to_main(self.main_pid)
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)


def leave_stop_signals_to_main(main_pid: int) -> None:
    """In a worker forked from ``main_pid``: ignore SIGINT, and SIGTERM until main is exiting."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if main_pid != _MAIN_PID:  # not forked from the process that marks its exit
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        return
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum, frame) -> None:
    if _MAIN_EXITING.value:
        # at once, as the default action would, but with status 0: the loader's SIGCHLD
        # handler in the main process reports a worker killed by a signal as a failed worker
        os._exit(0)
