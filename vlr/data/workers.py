"""What each DataLoader worker does first (`WorkerInit`).

A scheduler stops a job by signalling its whole process group (SLURM's time limit and
``scancel``, ``timeout``, ``kill -- -PGID``). A loader worker that dies of that SIGTERM makes
the main process's loop fail ("DataLoader worker ... is killed by signal") before Lightning's
handler can stop between two steps and save ``last.ckpt``. So workers ignore SIGTERM and SIGINT
and leave stopping to the main process, which shuts them down when it stops (and a worker exits
by itself when its parent is gone). Then Lightning's worker seeding, exactly as Lightning adds it
to a loader that has no ``worker_init_fn`` of its own (``seed_everything(workers=True)``).
"""

from __future__ import annotations

import os
import signal

from lightning.fabric.utilities.seed import pl_worker_init_function


class WorkerInit:
    """``worker_init_fn`` of vlr's loaders; ``rank``: the global rank Lightning would pass."""

    def __init__(self, rank: int = 0):
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if int(os.environ.get("PL_SEED_WORKERS", 0)):
            pl_worker_init_function(worker_id, rank=self.rank)
