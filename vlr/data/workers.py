"""What each DataLoader worker does first (`WorkerInit`).

A scheduler stops a job by signalling its whole process group (SLURM's time limit and
``scancel``, ``timeout``, ``kill -- -PGID``). A loader worker that dies of that SIGTERM makes
the main process's loop fail ("DataLoader worker ... is killed by signal") before Lightning's
handler can stop between two steps and save ``last.ckpt``. So a worker leaves stopping to the
main process: it ignores SIGINT, and obeys a SIGTERM only when the main process sent it.

The parent test matters. The main process itself stops its workers with SIGTERM: PyTorch's
loader when a worker does not leave in time, and ``multiprocessing`` at interpreter exit, which
terminates and then *joins* every live daemonic child (the persistent workers of a loader that
is still referenced). A worker that ignored every SIGTERM made that join wait forever, so the
interpreter never exited after its work was done. The sender is known only to
``sigwaitinfo``: SIGTERM is blocked in the worker and a daemon thread waits for it. Where
``sigwaitinfo`` does not exist (macOS, Windows) a worker keeps the default SIGTERM.

Then Lightning's worker seeding, exactly as Lightning adds it to a loader that has no
``worker_init_fn`` of its own (``seed_everything(workers=True)``).
"""

from __future__ import annotations

import os
import signal
import threading

from lightning.fabric.utilities.seed import pl_worker_init_function


class WorkerInit:
    """``worker_init_fn`` of vlr's loaders; ``rank``: the global rank Lightning would pass."""

    def __init__(self, rank: int = 0):
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        leave_stop_signals_to_parent()
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)


def leave_stop_signals_to_parent() -> None:
    """In a worker: ignore SIGINT; act on a SIGTERM only when the parent process sent it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, inherited by fork
    if not hasattr(signal, "sigwaitinfo"):
        return
    # blocked before the thread starts, so every thread of this worker blocks it
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    waiter = threading.Thread(target=_obey_sigterm_from, args=(os.getppid(),), name="vlr-worker-sigterm", daemon=True)
    waiter.start()


def _obey_sigterm_from(parent: int) -> None:
    while True:
        info = signal.sigwaitinfo({signal.SIGTERM})
        if info.si_pid == parent:
            # at once, as the default action would, but with status 0: the loader's SIGCHLD
            # handler in the parent reports a worker killed by a signal as a failed worker
            os._exit(0)
