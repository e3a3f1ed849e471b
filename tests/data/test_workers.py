"""Loader workers leave stopping to the main process: a scheduler's SIGTERM to the whole process
group must not kill them before Lightning saves, yet ``multiprocessing``'s SIGTERM when the main
process exits must still end them (ignoring it hung the interpreter at exit)."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Dataset

from vlr.data import workers
from vlr.data.workers import WorkerInit

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")


class WorkerState(Dataset):
    """Each item: the worker's pid and whether it ignores SIGINT."""

    def __len__(self):
        return 1000

    def __getitem__(self, i):
        return os.getpid(), signal.getsignal(signal.SIGINT) == signal.SIG_IGN


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped (Linux: /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _wait_gone(pid: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def _sigterm_scenario(context: str, report) -> None:
    """In a forked process (its own loader, its own exit mark): a worker ignores SIGTERM while
    this process works, and obeys it once this process's exit mark is set. Ends with os._exit,
    as a process at its exit does: the loader is never shut down by hand (its shutdown would wait
    on a lock the killed worker may hold; PyTorch skips it at interpreter exit)."""
    try:
        loader = DataLoader(
            WorkerState(),
            num_workers=1,
            worker_init_fn=WorkerInit(),
            persistent_workers=True,
            collate_fn=list,
            multiprocessing_context=context,
        )
        batches = iter(loader)
        pid, ignores_sigint = next(batches)[0]
        # a group SIGTERM (`kill -- -PGID`, SLURM, `timeout`) while this process still works
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.5)
        survived = _alive(pid) and next(batches)[0][0] == pid
        workers._MARKS.own.value = 1  # what this process's exit finalizer sets
        os.kill(pid, signal.SIGTERM)
        report.put({"worker": pid != os.getpid(), "sigint": ignores_sigint, "survived": survived,
                    "obeyed": _wait_gone(pid)})  # fmt: skip
    except BaseException as err:  # noqa: BLE001 (reported, not lost in the child)
        report.put({"error": repr(err)})
    finally:
        report.close()
        report.join_thread()  # the report reaches the pipe before this process ends
        os._exit(0)


@needs_proc
@pytest.mark.parametrize(
    "context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)]
)  # spawn: macOS's default; the worker gets the mark through its pickled worker_init_fn
def test_a_worker_outlives_sigterm_until_its_parent_exits(context):
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    report = fork.Queue()
    scenario = fork.Process(target=_sigterm_scenario, args=(context, report))
    scenario.start()
    try:
        result = report.get(timeout=120)
    finally:
        scenario.join(30)
        if scenario.is_alive():
            scenario.kill()
    assert result == {"worker": True, "sigint": True, "survived": True, "obeyed": True}
    assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # this process keeps its own


def _rank_holding_workers(build_init_here: bool, init) -> None:
    """A process ``multiprocessing`` forked (as a forked DDP rank): its loader's persistent workers
    are still referenced when it ends."""
    loader = DataLoader(
        list(range(8)),
        batch_size=2,
        num_workers=1,
        persistent_workers=True,
        worker_init_fn=WorkerInit() if build_init_here else init,
    )
    global _HELD
    _HELD = iter(loader)
    next(_HELD)


@pytest.mark.parametrize("build_init_here", [True, False], ids=["init_in_rank", "init_in_parent"])
def test_a_forked_process_holding_persistent_workers_ends(build_init_here):
    """``multiprocessing`` ends a process it started with the function an interpreter's exit runs
    from ``atexit`` (``util._exit_function``: finalizers, then terminate and join the daemonic
    children): each process's own mark is set there too. (A forked child renews its mark after
    the fork, so the main interpreter's own needs the test below.)"""
    import multiprocessing

    rank = multiprocessing.get_context("fork").Process(
        target=_rank_holding_workers, args=(build_init_here, WorkerInit())
    )
    rank.start()
    rank.join(60)
    alive = rank.is_alive()
    if alive:
        rank.kill()
    assert not alive and rank.exitcode == 0


@pytest.mark.slow
def test_an_interpreter_holding_persistent_workers_exits(tmp_path):
    """The process boundary is what is tested: ``multiprocessing`` terminates and joins live
    workers at exit; a worker that ignored that SIGTERM hung the interpreter forever."""
    script = tmp_path / "hold_workers.py"
    script.write_text(
        textwrap.dedent(
            """
            from torch.utils.data import DataLoader
            from vlr.data.workers import WorkerInit
            loader = DataLoader(list(range(8)), batch_size=2, num_workers=2, persistent_workers=True,
                                worker_init_fn=WorkerInit())
            batches = iter(loader)
            next(batches)
            print("served", flush=True)
            """
        )
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "served"
    assert "Error" not in done.stderr, done.stderr


def test_workers_keep_lightnings_seeding(monkeypatch):
    seeds = []
    monkeypatch.setenv("PL_SEED_WORKERS", "1")
    monkeypatch.setattr("vlr.data.workers.leave_stop_signals_to_parent", lambda mark: None)  # not in this process
    monkeypatch.setattr("vlr.data.workers.pl_worker_init_function", lambda wid, rank=None: seeds.append((wid, rank)))
    WorkerInit(3)(5)
    assert seeds == [(5, 3)]
    monkeypatch.setenv("PL_SEED_WORKERS", "0")
    WorkerInit(3)(6)
    assert seeds == [(5, 3)]


def test_the_datamodules_loaders_use_it(synthetic_root):
    from tests.conftest import SYNTHETIC_ROOT_SPEC, compose_config
    from vlr.build import build_data_and_model

    cfg = compose_config(f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.num_workers=0", "logger=none")
    datamodule, _ = build_data_and_model(cfg)
    datamodule.setup("fit")
    assert isinstance(datamodule.train_dataloader().worker_init_fn, WorkerInit)
    assert all(isinstance(loader.worker_init_fn, WorkerInit) for loader in datamodule.val_dataloader())
