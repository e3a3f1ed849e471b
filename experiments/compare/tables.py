"""report.md and the results table: a row per (objective, imbalance, strength), mean ± std over seeds.

The single-modal NDCG columns are the ones the runs logged (``i2i/<relevance>_NDCG@10`` and
``t2t/...``, whatever relevance graded them), so a table never shows a column no run has.
"""

from __future__ import annotations

import re

from experiments.compare.pooled import Summary, ordered, summarize
from experiments.compare.verdict import verdict
from experiments.paired import MARGIN
from vlr.sweeps.summary import SINGLE_MODAL_NDCG

CROSS = ["i2t/R@1", "t2i/R@1", "rsum"]
OVERLAP = ["image/overlap@10", "text/overlap@10"]
_NDCG10 = re.compile(r"(i2i|t2t)/(\w+_)?NDCG@10")


def single_columns(summary: Summary) -> list[str]:
    """Label- and caption-based R@1, every logged i2i/t2t NDCG@10 (i2i first), their sum, rsum_single."""
    ndcg = sorted({m for stats in summary.values() for m in stats if _NDCG10.fullmatch(m)}, key=lambda m: (m[:3], m))
    return ["i2i/R@1", "t2t/R@1", *ndcg, SINGLE_MODAL_NDCG, "rsum_single"]


def table(summary: Summary, metrics: list[str]) -> str:
    head = "| imbalance | strength | objective | n | " + " | ".join(metrics) + " |"
    rule = "|" + "---|" * (4 + len(metrics))
    rows = []
    for key in ordered(summary):
        stats = summary[key]
        n = max((s[2] for s in stats.values()), default=0)
        cells = [f"{stats[m][0]:.2f} ± {stats[m][1]:.2f}" if m in stats else "–" for m in metrics]
        rows.append(f"| {key[1]} | {key[2]:g} | {key[0]} | {n} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def report(cells: list[dict], title: str, notes: str = "", margin: float = MARGIN) -> str:
    """report.md: the three tables and the verdict."""
    summary = summarize(cells)
    seeds = sorted({c["seed"] for c in cells})
    parts = [
        f"# {title}",
        f"{len(cells)} runs; seeds {seeds}; mean ± std over seeds of the test split.",
        "## Cross-modal retrieval",
        table(summary, CROSS),
        "## Single-modal retrieval",
        table(summary, single_columns(summary)),
        "## Structure preservation (overlap@10 with the reference neighbourhoods)",
        table(summary, OVERLAP),
        "## Does structure preservation raise single-modal retrieval without costing cross-modal retrieval?",
        verdict(summary, cells, margin) or "(needs infonce and relation_kd/covlr/sad runs at the same level)",
    ]
    if notes:
        parts += [notes.strip()]
    return "\n\n".join(parts) + "\n"


def results_table(cells: list[dict]) -> tuple[list[str], list[list[object]]]:
    """The report's numbers as one table (W&B): mean and std over seeds of every cross-modal,
    single-modal and overlap metric, a row per objective x imbalance x strength."""
    summary = summarize(cells)
    metrics = [*CROSS, *single_columns(summary), *OVERLAP]
    columns = ["imbalance", "strength", "objective", "n"]
    columns += [f"{m} {stat}" for m in metrics for stat in ("mean", "std")]
    rows = []
    for key in ordered(summary):
        stats = summary[key]
        n = max((s[2] for s in stats.values()), default=0)
        values = [stats[m][i] if m in stats else None for m in metrics for i in (0, 1)]
        rows.append([key[1], key[2], key[0], n, *values])
    return columns, rows
