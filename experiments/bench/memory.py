"""Peak resident memory added by a piece of code, read from /proc (Linux).

torch's CPU allocations are invisible to tracemalloc, so the bench resets the
kernel's high-water mark (``clear_refs``) and reads ``VmHWM`` afterwards.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


@contextmanager
def measure():
    """Yields a dict that gets ``seconds`` and ``peak_added_gib`` when the block ends."""
    result: dict[str, float] = {}
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset VmHWM to the current RSS
    except OSError:
        pass
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    yield result
    result["seconds"] = time.perf_counter() - start
    result["peak_added_gib"] = max(0, _status_kib("VmHWM") - base) / 2**20
