"""Fault injection for the kill tests (on PYTHONPATH only in tests/test_resume.py's child runs).

``VLR_TEST_DIE_AFTER=<file name>:<n>``: the process dies (os._exit, like SIGKILL: no cleanup)
right after the n-th complete write of that file through `vlr.io.atomic_write`.
``VLR_TEST_DIE_WRITING=<file name>:<n>``: it dies in the middle of the n-th write of that
file, after half of the bytes reached the temporary file.
``VLR_TEST_WAIT_AFTER=<file name>:<n>:<flag path>``: right after the n-th complete write of that
file, the process waits (idle, at most 10 minutes) until the flag path exists, then goes on: a
run that stays alive, mid-run, for as long as a test needs it to.
"""

import os

_after, _writing = os.environ.get("VLR_TEST_DIE_AFTER"), os.environ.get("VLR_TEST_DIE_WRITING")
_wait = os.environ.get("VLR_TEST_WAIT_AFTER")
if _after or _writing or _wait:
    import io
    import time
    from pathlib import Path

    import vlr.io

    _real = vlr.io.atomic_write
    _counts: dict[str, int] = {}

    def _target(spec):
        name, n = spec.rsplit(":", 1)
        return name, int(n)

    def atomic_write(path, write, what="file"):
        name = Path(path).name
        _counts[name] = _counts.get(name, 0) + 1
        if _writing and _target(_writing) == (name, _counts[name]):
            buf = io.BytesIO()
            write(buf)
            data = buf.getvalue()

            def half(fh):
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                os._exit(137)

            return _real(path, half, what)
        out = _real(path, write, what)
        if _after and _target(_after) == (name, _counts[name]):
            os._exit(137)
        if _wait:
            file, n, flag = _wait.split(":", 2)
            if (file, int(n)) == (name, _counts[name]):
                deadline = time.monotonic() + 600
                while not Path(flag).exists() and time.monotonic() < deadline:
                    time.sleep(0.1)
        return out

    vlr.io.atomic_write = atomic_write
