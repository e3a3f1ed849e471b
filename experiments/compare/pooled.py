"""Runs pooled over seeds: mean ± std of every test metric per (objective, imbalance, strength),
and the difference of two such cells. The single-modal sum column is `vlr.sweeps.summary`'s."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict

from vlr.sweeps.summary import SINGLE_MODAL_NDCG, single_modal_ndcg

BASELINES = ("infonce", "triplet")
STRUCTURE = ("relation_kd", "covlr", "sad")  # relation_kd: CoVLR's relation loss without the meta step

Key = tuple[str, str, float]  # (objective, imbalance, strength)
Summary = dict[Key, dict[str, tuple[float, float, int]]]


def mean_std(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def summarize(cells: list[dict]) -> Summary:
    """(objective, imbalance, strength) -> metric (``test/`` dropped) -> (mean, std, n) over seeds."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for c in cells:
        metrics = {k.removeprefix("test/"): float(v) for k, v in c["metrics"].items()}
        ndcg = single_modal_ndcg(metrics)
        if ndcg is not None:
            metrics[SINGLE_MODAL_NDCG] = ndcg
        for k, v in metrics.items():
            groups[(c["objective"], c["imbalance"], c["strength"])][k].append(v)
    return {key: {m: mean_std(v) for m, v in metrics.items()} for key, metrics in groups.items()}


def difference(summary: Summary, a: Key, b: Key, metric: str) -> tuple[float, float] | None:
    """Mean of a minus mean of b, and the standard error of that difference (Welch)."""
    if a not in summary or b not in summary or metric not in summary[a] or metric not in summary[b]:
        return None
    (ma, sa, na), (mb, sb, nb) = summary[a][metric], summary[b][metric]
    return ma - mb, math.sqrt(sa**2 / na + sb**2 / nb)


def objective_order(objective: str) -> tuple[int, str]:
    """Baselines first, then the structure-preserving objectives, then any other by name."""
    known = [*BASELINES, *STRUCTURE]
    return (known.index(objective) if objective in known else len(known), objective)


def ordered(summary: Summary) -> list[Key]:
    """The cells as tables list them: by imbalance, strength, then objective."""
    return sorted(summary, key=lambda k: (k[1], k[2], objective_order(k[0])))
