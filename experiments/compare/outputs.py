"""What a comparison writes: results.json (the cells), report.md, tradeoff.png; and, on request,
the figure and the results table as W&B media in a ``compare`` run."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.compare.figures import tradeoff_plot
from experiments.compare.pooled import summarize
from experiments.compare.tables import report, results_table
from experiments.paired import MARGIN


def write_outputs(cells: list[dict], out: Path, title: str, notes: str = "", margin: float = MARGIN) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"cells": cells}, indent=1))
    (out / "report.md").write_text(report(cells, title, notes, margin))
    tradeoff_plot(summarize(cells), out / "tradeoff.png")


def log_to_wandb(cells: list[dict], out: Path, title: str, project: str = "vlr", offline: bool = True) -> Path:
    """The trade-off figure and the results table of a comparison as W&B media (a ``compare`` run)."""
    from vlr.tracking.wandb_report import log_summary_run

    figure = out / "tradeoff.png"
    return log_summary_run(
        project=project,
        name=title,
        save_dir=out,
        images={"tradeoff": figure} if figure.is_file() else {},
        tables={"results": results_table(cells)},
        offline=offline,
    )
