"""Read an offline W&B run file (``<run dir>/wandb/offline-run-*/run-*.wandb``) without a server.

The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then LevelDB-log
style chunks in 32 KiB blocks (CRC32, length, kind: full / first / middle / last), each
record a `wandb.proto.wandb_internal_pb2.Record`. The installed wandb writes these files
but no longer ships a reader; this one is what tests and `experiments/compare/` use to
check what a run sent: its config, its history rows, its metric definitions and summary.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BLOCK = 32768
CHUNK_HEADER = 7  # crc32 (4), length (2), kind (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


class WandbFileError(ValueError):
    pass


def raw_records(path: str | Path) -> Iterator[bytes]:
    """The serialised records of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise WandbFileError(f"{path}: not a W&B run file (no ':W&B' header)")
    pos, pending = 7, b""
    while pos + CHUNK_HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < CHUNK_HEADER:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + CHUNK_HEADER])
        pos += CHUNK_HEADER
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def _key(item) -> str:
    return "/".join(item.nested_key) if item.nested_key else item.key


@dataclass
class WandbRun:
    """What an offline run recorded: ``config`` (key -> value), ``history`` (one dict per
    logged row), ``summary`` (the last summary value per key), ``metrics`` (define_metric
    records: name or glob -> the summary kinds asked for), ``step_metrics`` (name or glob -> its
    x axis, where one was defined), ``artifacts`` (name, type, aliases, metadata and files of
    each logged artifact), and the run's name and tags."""

    name: str = ""
    group: str = ""
    job_type: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, set[str]] = field(default_factory=dict)
    step_metrics: dict[str, str] = field(default_factory=dict)
    artifacts: list[dict[str, Any]] = field(default_factory=list)


def read_run(path: str | Path) -> WandbRun:
    """Parse a ``run-*.wandb`` file (or the single one under a run folder)."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("run-*.wandb"))
        if len(files) != 1:
            raise WandbFileError(f"{path}: expected one run-*.wandb file, found {len(files)}")
        path = files[0]
    run = WandbRun()
    for raw in raw_records(path):
        record = pb.Record()  # type: ignore[attr-defined]  # generated protobuf module
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type, run.tags = r.display_name, r.run_group, r.job_type, list(r.tags)
            for item in r.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run.config[_key(item)] = json.loads(item.value_json)
        elif kind == "history":
            run.history.append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            for item in record.summary.update:
                run.summary[_key(item)] = json.loads(item.value_json)
        elif kind == "metric":
            m = record.metric
            kinds = {k for k in ("min", "max", "mean", "best", "last") if getattr(m.summary, k)}
            run.metrics.setdefault(m.glob_name or m.name, set()).update(kinds)
            if m.step_metric:
                run.step_metrics[m.glob_name or m.name] = m.step_metric
        elif kind == "artifact":
            a = record.artifact
            contents = {e.path: e.size for e in a.manifest.contents}
            meta = json.loads(a.metadata) if a.metadata else {}
            run.artifacts.append(
                {"name": a.name, "type": a.type, "aliases": list(a.aliases), "metadata": meta, "files": contents}
            )
    return run
