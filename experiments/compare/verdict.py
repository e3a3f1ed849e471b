"""The verdict, per imbalance level: does each structure-preserving objective beat the InfoNCE
baseline on single-modal retrieval without losing cross-modal rsum?

With per-query rankings for every paired run (``save_rankings=true``), the differences are
paired by seed with 95% two-stage bootstrap intervals (seeds, then test images:
`experiments.paired.seeds_and_queries_difference`). Without them, the seed means' difference
± 2 standard errors stands in for the interval, and each line says so. Either interval is
judged by the same rule, `experiments.paired.status`: a rise is resolved when its interval lies
above 0, and "no cross-modal cost" needs the whole rsum interval inside ±``margin``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from experiments.compare.pooled import STRUCTURE, Key, Summary, difference
from experiments.paired import MARGIN, load_rankings, seeds_and_queries_difference, smallest_detectable, status
from vlr.sweeps.summary import SINGLE_MODAL_NDCG


def verdict(summary: Summary, cells: list[dict] | None = None, margin: float = MARGIN) -> str:
    """One line per (level, structure-preserving objective) that has an infonce run beside it.
    Single-modal = the i2i + t2t NDCG@10 sum where logged, else rsum_single."""
    lines = []
    levels = sorted({(k[1], k[2]) for k in summary}, key=lambda lvl: (lvl[0] != "none", lvl))  # balanced first
    for imbalance, strength in levels:
        base = ("infonce", imbalance, strength)
        for obj in STRUCTURE:
            key = (obj, imbalance, strength)
            primary = SINGLE_MODAL_NDCG if difference(summary, key, base, SINGLE_MODAL_NDCG) else "rsum_single"
            pairs = _paired_rankings(cells or [], key, base)
            line = _paired_line(pairs, key, primary, margin) if pairs else _welch_line(summary, key, primary, margin)
            if line:
                lines.append(line)
    return "\n".join(lines)


def _welch_line(summary: Summary, key: Key, primary: str, margin: float) -> str | None:
    base = ("infonce", key[1], key[2])
    single, cross = difference(summary, key, base, primary), difference(summary, key, base, "rsum")
    if single is None or cross is None:
        return None
    seeds = min(summary[key][primary][2], summary[base][primary][2])
    # the s.e. of a difference of seed means, as the s.d. of that many paired differences
    cross_sd = cross[1] * math.sqrt(seeds)
    judged = status(_welch_interval(single, seeds), _welch_interval(cross, seeds), margin)
    answer = _answer(judged, margin, seeds, cross_sd)
    other = difference(summary, key, base, "rsum_single") if primary == SINGLE_MODAL_NDCG else None
    aside = f"; rsum_single {other[0]:+.2f} (± {other[1]:.2f})" if other else ""
    return (
        f"- {key[1]} {key[2]:g}, {key[0]} vs infonce: {primary} {single[0]:+.2f} (± {single[1]:.2f} s.e.), "
        f"rsum {cross[0]:+.2f} (± {cross[1]:.2f}) → **{answer}** (mean ± 2 s.e.: no per-query rankings){aside}"
    )


def _welch_interval(diff: tuple[float, float], seeds: int) -> dict:
    return {"difference": diff[0], "low": diff[0] - 2 * diff[1], "high": diff[0] + 2 * diff[1], "seeds": seeds}


def _answer(verdict_: dict, margin: float, seeds: int, cross_sd: float = math.nan) -> str:
    """The verdict (`experiments.paired.status`) in words. ``cross_sd``: the s.d. of the per-seed
    rsum differences; where a cross-modal cost beyond the margin is not excluded, the line gives
    the smallest rsum difference a paired t-test over these seeds detects (alpha 0.05, 80% power):
    a margin far below it needs more seeds."""
    if seeds < 2:
        return "not resolved: one seed (no spread across seeds to judge a difference by)"
    if verdict_["claim"] == "reproduces":
        return "yes"
    if verdict_["claim"] == "does not reproduce":
        return (
            "no: it costs cross-modal retrieval" if verdict_["cross"] == "cost" else "no: single-modal retrieval falls"
        )
    if verdict_["single"] != "up":
        return "not resolved: a single-modal rise is not resolved"
    said = f"not resolved: single-modal rises, but a cross-modal cost beyond ±{margin:g} is not excluded"
    if math.isfinite(cross_sd):  # seeds >= 2 here
        said += f" ({seeds} seeds detect rsum differences of {smallest_detectable(cross_sd, seeds):.2f} or more)"
    return said


def _paired_rankings(cells: list[dict], key: Key, base: Key) -> list[tuple[dict, dict]]:
    """The rankings of ``key``'s and ``base``'s runs paired by seed; [] unless every run of both
    has rankings and they share at least one seed."""

    def by_seed(k: Key) -> dict[int, dict]:
        return {c["seed"]: c for c in cells if (c["objective"], c["imbalance"], c["strength"]) == k}

    a, b = by_seed(key), by_seed(base)
    seeds = sorted(set(a) & set(b))
    if not seeds or not all("rankings" in c for c in (*a.values(), *b.values())):
        return []
    return [(load_rankings(Path(a[s]["rankings"])), load_rankings(Path(b[s]["rankings"]))) for s in seeds]


def _paired_line(pairs: list[tuple[dict, dict]], key: Key, primary: str, margin: float) -> str:
    single = seeds_and_queries_difference(pairs, primary)
    cross = seeds_and_queries_difference(pairs, "rsum")
    per_seed = np.asarray(cross["per_seed"], dtype=float)
    cross_sd = float(per_seed.std(ddof=1)) if len(per_seed) >= 2 else math.nan
    answer = _answer(status(single, cross, margin), margin, single["seeds"], cross_sd)

    def fmt(d: dict) -> str:
        return f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"

    return (
        f"- {key[1]} {key[2]:g}, {key[0]} vs infonce ({single['seeds']} paired seeds): {primary} {fmt(single)}, "
        f"rsum {fmt(cross)} → **{answer}** (95% bootstrap over seeds and test images)"
    )
