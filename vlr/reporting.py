"""What a run leaves behind for people: metrics.json and a console table."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table


def stage_metrics(callback_metrics: dict, stage: str) -> dict[str, float]:
    """Flat ``{stage}/...`` metrics as plain floats, sorted by name."""
    out = {k: float(v) for k, v in callback_metrics.items() if k.startswith(f"{stage}/")}
    return dict(sorted(out.items()))


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"refusing to write non-finite metrics {bad} to {path}")
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    tmp.replace(path)


DIRECTIONS = ("i2t", "t2i", "t2t", "i2i")


def print_metrics_table(metrics: dict[str, float], title: str) -> None:
    """Metrics as rows, retrieval directions as columns; totals and overlaps underneath."""
    stage = next(iter(metrics)).split("/")[0] if metrics else ""
    present = [d for d in DIRECTIONS if any(k.startswith(f"{stage}/{d}/") for k in metrics)]
    names = sorted(
        {k.split("/")[2] for k in metrics if k.count("/") == 2 and k.split("/")[1] in present},
        key=lambda n: (not n.startswith("R@"), not n.startswith("NDCG"), len(n), n),
    )
    table = Table(title=title)
    table.add_column("metric")
    for d in present:
        table.add_column(d, justify="right")
    for name in names:
        cells = [metrics.get(f"{stage}/{d}/{name}") for d in present]
        table.add_row(name, *["" if c is None else f"{c:.2f}" for c in cells])
    console = Console()
    console.print(table)
    rest = {k: v for k, v in metrics.items() if k.count("/") == 1 or k.split("/")[1] not in present}
    console.print("  ".join(f"{k.split('/', 1)[1]} = {v:.2f}" for k, v in rest.items()))
