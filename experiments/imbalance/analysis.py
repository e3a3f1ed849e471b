"""The study's numbers from its cells: per-arm summaries, paired comparisons, verdicts.

Nothing here renders (that is `experiments.imbalance.report`); everything it computes goes
into ``results.json``, so the report can be regenerated from that file alone.

- single-modal measure: i2i + t2t NDCG@10 with ROUGE-L relevance (``ndcg_single@10``), the
  papers' protocol and the one the verdict uses; label-based i2i R@1 and t2t R@1 are shown too;
- cross-modal measure: rsum (i2t + t2i R@1, 5, 10);
- comparisons: every arm against infonce, and covlr against relation_kd (what the meta step
  adds beyond its relation loss), at each imbalance level, paired by (generator seed, seed),
  with 95% bootstrap intervals (generator seeds, then seeds within each and its test images,
  one image resample per test set) from per-query rankings;
- verdicts: from the same bootstrap at a Bonferroni-adjusted level (`family_level`), so the
  chance of any false "resolved" among them stays under 5%; the unadjusted ones beside them.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.paired import MARGIN, components, load_rankings, seeds_and_queries_difference, status
from vlr.sweeps.summary import SINGLE_MODAL_NDCG, single_modal_ndcg

SINGLE, CROSS = SINGLE_MODAL_NDCG, "rsum"
SHOWN = (CROSS, "i2t/R@1", "t2i/R@1", SINGLE, "i2i/NDCG@10", "t2t/NDCG@10", "i2i/R@1", "t2t/R@1", "rsum_single")
COMPARED = (SINGLE, CROSS, "rsum_single")
BOOTSTRAP = 20000  # enough draws for the tails of the family-wise intervals
FAMILY_ALPHA = 0.05


def metrics_of(cell: dict) -> dict[str, float]:
    out = dict(cell["test"])
    value = single_modal_ndcg(out)
    if value is not None:
        out[SINGLE] = value
    return out


def levels(directions, strengths) -> list[tuple[str, float, str]]:
    """(direction, strength, the cells' imbalance name): strength 0 is the balanced data ('none')."""
    return [(d, s, "none" if s == 0 else d) for d in directions for s in strengths]


def _at(cells: list[dict], imbalance: str, strength: float, arm: str) -> list[dict]:
    return [c for c in cells if (c["imbalance"], c["strength"], c["arm"]) == (imbalance, strength, arm)]


def summarize(cells: list[dict], directions, strengths, arms) -> list[dict]:
    rows = []
    for direction, strength, imbalance in levels(directions, strengths):
        for arm in arms:
            members = [metrics_of(c) for c in _at(cells, imbalance, strength, arm)]
            if not members:
                continue
            stats = {}
            for key in SHOWN:
                values = [m[key] for m in members if key in m]
                if values:
                    sd = statistics.stdev(values) if len(values) > 1 else 0.0
                    stats[key] = {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}
            rows.append({"direction": direction, "strength": strength, "arm": arm, "n": len(members), "metrics": stats})
    return rows


def compared_pairs(arms) -> list[tuple[str, str]]:
    """(arm, baseline): every arm against infonce, and covlr against relation_kd."""
    out = [(a, "infonce") for a in arms if a != "infonce"]
    return out + ([("covlr", "relation_kd")] if {"covlr", "relation_kd"} <= set(arms) else [])


def compare(cells: list[dict], root: Path, directions, strengths, arms, n: int = BOOTSTRAP) -> list[dict]:
    """Paired comparisons at every level: each arm against infonce, covlr against relation_kd."""
    pairs_of = compared_pairs(arms)
    cache: dict[tuple, dict] = {}
    out = []
    family = family_level(cells, directions, strengths, pairs_of)
    for direction, strength, imbalance in levels(directions, strengths):
        for arm, base in pairs_of:
            key = (imbalance, strength, arm, base)
            if key not in cache:
                a = {(c["generator_seed"], c["seed"]): c for c in _at(cells, imbalance, strength, arm)}
                b = {(c["generator_seed"], c["seed"]): c for c in _at(cells, imbalance, strength, base)}
                common = sorted(set(a) & set(b), key=str)
                if not common:
                    continue
                ranked = [
                    (load_rankings(root / a[p]["run_dir"]), load_rankings(root / b[p]["run_dir"])) for p in common
                ]
                held = [m for m in COMPARED if all(k in ranked[0][0] for k in components(m))]
                clusters = [str(g) for g, _ in common]  # the generator seed: the test set the pair was scored on
                cache[key] = {
                    "pairs": [list(p) for p in common],
                    **{
                        m: seeds_and_queries_difference(ranked, m, n=n, clusters=clusters, family_level=family)
                        for m in held
                    },
                }
            result = cache[key]
            adjusted = {
                m: {**result[m], "low": result[m]["family_low"], "high": result[m]["family_high"]}
                for m in (SINGLE, CROSS)
            }
            out.append(
                {
                    "direction": direction,
                    "strength": strength,
                    "arm": arm,
                    "baseline": base,
                    **result,
                    # the verdict at the family-wise level; the per-comparison 95% one beside it
                    **status(adjusted[SINGLE], adjusted[CROSS]),
                    "unadjusted": status(result[SINGLE], result[CROSS]),
                }
            )
    return out


def family_level(cells: list[dict], directions, strengths, pairs_of) -> float:
    """Bonferroni: the interval level that keeps the chance of any false "resolved" among all the
    verdicts' intervals (single- and cross-modal, of every distinct comparison) under FAMILY_ALPHA."""
    present = {(c["imbalance"], c["strength"], c["arm"]) for c in cells}
    distinct = {
        (imbalance, strength, arm, base)
        for _, strength, imbalance in levels(directions, strengths)
        for arm, base in pairs_of
        if (imbalance, strength, arm) in present and (imbalance, strength, base) in present
    }
    return 1.0 - FAMILY_ALPHA / max(1, 2 * len(distinct))


def chance_levels(cells: list[dict]) -> dict[str, dict[str, float]]:
    """The test split's chance level (a constant model) per generator seed, for the shown metrics."""
    out: dict[str, dict[str, float]] = {}
    for c in cells:
        g = str(c["generator_seed"])
        if g not in out:
            chance = dict(c["chance"])
            value = single_modal_ndcg(chance)
            if value is not None:
                chance[SINGLE] = value
            out[g] = {k: chance[k] for k in SHOWN if k in chance}
    return out


def analyse(cells: list[dict], root: Path) -> dict:
    directions = sorted({c["imbalance"] for c in cells if c["imbalance"] != "none"}, key=_direction_order)
    strengths = sorted({c["strength"] for c in cells})
    arms = [a for a in ("infonce", "triplet", "relation_kd", "covlr", "sad") if any(c["arm"] == a for c in cells)]
    arms += sorted({c["arm"] for c in cells} - set(arms))
    return {
        "margin": MARGIN,
        "single_measure": SINGLE,
        "cross_measure": CROSS,
        "bootstrap": {
            "resamples": BOOTSTRAP,
            "level": 0.95,
            "units": "generator seeds (test sets), then seeds within each and its test images",
            "family_level": family_level(cells, directions, strengths, compared_pairs(arms)),
            "family": "Bonferroni over the single- and cross-modal intervals of every distinct comparison",
        },
        "summary": summarize(cells, directions, strengths, arms),
        "comparisons": compare(cells, root, directions, strengths, arms),
        "chance": chance_levels(cells),
    }


def _direction_order(name: str) -> tuple[int, str]:
    return (0 if name.startswith("text") else 1, name)
