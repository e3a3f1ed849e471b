"""A preloaded interpreter for the tests' command-line runs (`tests.conftest.run_cli`).

Most of a small CLI run's time is importing torch, Lightning, transformers, timm, hydra and
wandb (about 8 of the 13 seconds of a 12-image run on the 2-core CI machine), and the suite
starts dozens of them. This server imports them once; for each run it forks, and the child
becomes ``python -m <module> <args>`` as a fresh process would: its own session, working
directory, environment, argv, stdin from /dev/null, stdout and stderr to the files it was
given, the module run as ``__main__`` by runpy (what ``-m`` does), and a normal interpreter
exit (atexit handlers, non-daemon threads joined, SystemExit's code).

What differs from a fresh interpreter is only what happens at import time: variables read
then (OMP_NUM_THREADS, HF_HUB_OFFLINE, PYTHONPATH ...) keep the server's values, so
`run_cli` starts a fresh interpreter whenever a run's environment changes one of them, and
import-time warnings are printed once, by the server. Tests of what a fresh process does
(kills, signals, packaging, sweeps) start their own processes.

Protocol: one JSON request per line on stdin ({id, module, args, cwd, env, stdout, stderr,
timeout}); two JSON replies per request on the reply pipe: {"id", "pid"} once the run is
forked (so the caller can kill its process group), then {"id", "returncode"} or
{"id", "timeout": true}. The server's own output goes to its stderr, never the reply pipe.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import runpy
import signal
import sys
import tempfile
import threading
import time
import warnings

IMPORT_TIME_DIRS: list[tempfile.TemporaryDirectory] = []


def preload() -> None:
    import vlr.eval  # noqa: F401
    import vlr.train  # noqa: F401
    import vlr.write_features  # noqa: F401

    # A Python thread alive at fork would leave its locks (logging's, the import lock) held in every
    # child. Native thread pools are different: numpy's and scipy's OpenBLAS each start one worker
    # at import (2 here) and re-create it in a forked child (pthread_atfork), as every fork-based
    # DataLoader worker relies on; torch starts its OpenMP pool on first use, not at import.
    if threading.active_count() > 1:
        names = [t.name for t in threading.enumerate()]
        raise RuntimeError(f"preloading started Python threads {names}: forking is not safe")
    # temporary folders made at import time (wandb's media folder): shared by every child, so
    # no child may delete them when it exits, as a fresh process deletes its own
    with warnings.catch_warnings():  # isinstance() on torch's deprecated reduce_op object warns
        warnings.simplefilter("ignore")
        IMPORT_TIME_DIRS.extend(o for o in gc.get_objects() if isinstance(o, tempfile.TemporaryDirectory))


def _wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": os.waitstatus_to_exitcode(status)}
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)  # the run and any process it started (DDP ranks)
            os.waitpid(pid, 0)
            return {"timeout": True}
        time.sleep(0.02)


def _reply(replies, request: dict, reply: dict) -> None:
    replies.write(json.dumps({"id": request["id"], **reply}) + "\n")
    replies.flush()


def serve(reply_fd: int) -> dict:
    """Answer requests until stdin closes (then exit); returns only in a forked child."""
    requests = os.fdopen(os.dup(0), "r")
    replies = os.fdopen(reply_fd, "w")
    for line in requests:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            requests.close()
            replies.close()
            return request
        _reply(replies, request, {"pid": pid})
        _reply(replies, request, _wait(pid, request["timeout"]))
    sys.exit(0)


def become(request: dict) -> None:
    """This (forked) process takes the place of ``python -m module args`` run in ``cwd``."""
    os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path, flags in (
        (0, os.devnull, os.O_RDONLY),
        (1, request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    for folder in IMPORT_TIME_DIRS:
        folder._finalizer.detach()
        atexit.unregister(folder.cleanup)  # wandb registers its media folder's cleanup too
    tempfile.tempdir = None  # recomputed from this run's TMPDIR
    sys.stdout.reconfigure(line_buffering=True)  # as PYTHONUNBUFFERED: a killed run keeps its output
    sys.stderr.reconfigure(line_buffering=True)
    sys.path[0] = request["cwd"]  # `python -m` puts the working directory first
    sys.argv = [request["module"], *request["args"]]  # runpy sets argv[0] to the module's file
    sys.modules.pop(request["module"], None)  # as in `python -m`: the module runs as __main__ only


if __name__ == "__main__":
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # anything printed (while importing, say) goes to stderr, never into the replies
    preload()
    job = serve(reply_fd)
    become(job)
    runpy.run_module(job["module"], run_name="__main__", alter_sys=True)
