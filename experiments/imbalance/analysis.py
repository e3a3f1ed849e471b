"""The study's numbers from its cells: collapse, the premise, the pre-registered interaction,
the cross-modal cost and the teacher factor. Nothing here renders (`report` does); everything
goes into ``results.json``, so the report can be regenerated from that file alone.

Units: a pair is one generator seed (its own train and test data, training seed = generator
seed), so pairs are independent. Every test is over pairs: paired t (two-sided) with its 95%
interval and the exact sign-flip p-value beside it (`experiments.paired`).

- collapse: a cell collapsed when its test rsum is below ``collapse_factor`` x its chance
  level, or (where it has an InfoNCE term) its final contrastive loss never left the ln(batch)
  plateau. A pair with a collapsed cell is left out of every comparison that cell enters,
  and the report lists it;
- premise (Holm over the directions): infonce's strong-side ground-truth NDCG@10 under each
  direction minus on balanced data; it holds where that falls, resolved;
- primary family (Holm over the <= 6 hypotheses of `Design.hypotheses`): per arm and
  direction, the interaction [(arm − infonce) under imbalance] − [(arm − infonce) balanced];
- cross-modal cost: (arm − infonce) rsum per level, non-inferiority against a margin equal to
  the smallest effect the design detects (alpha, 80% power) at the pooled s.d. of those pair
  differences;
- with a re-ranker (a ``--fusion K`` study, whose cells carry ``rerank/rsum``): the cross-modal
  cost again on the re-ranked rsum, and per arm and level what re-ranking itself changes
  (re-ranked − ITC rsum of the same cell); the single-modal outcomes stay on the ITC
  embeddings, which the re-ranker does not touch;
- teacher factor (secondary, its own Holm family): per teacher, (arm − infonce) under the
  teacher direction (and the interaction where the teacher also ran on balanced data); each
  control teacher against the learned one: (arm with it − arm with the learned teacher) on the
  strong side under that direction.
"""

from __future__ import annotations

import math
import statistics

from experiments.imbalance.design import CROSS, Design, strong_metric
from experiments.paired import compare_pairs, holm, non_inferiority, smallest_detectable

RERANKED = "rerank/rsum"  # ITM re-ranking of ITC's top k (cells of a --fusion K study)
SHOWN_SUFFIXES = ("rsum", RERANKED, "i2t/R@1", "t2i/R@1", "i2i/{r}_NDCG@10", "t2t/{r}_NDCG@10", "i2t/{r}_NDCG@10")


def shown_metrics(relevance: str) -> list[str]:
    return [m.format(r=relevance) for m in SHOWN_SUFFIXES]


# -- collapse -------------------------------------------------------------------------
def collapse(cell: dict, design: Design) -> dict:
    """Whether a cell left chance: test rsum against ``collapse_factor`` x chance, and (where
    logged) the final InfoNCE loss against ``plateau_fraction`` x ln(batch)."""
    rsum, chance = cell["test"].get(CROSS), cell.get("chance", {}).get(CROSS)
    ratio = rsum / chance if rsum is not None and chance else None
    training = cell.get("training") or {}
    itc, ln_batch = training.get("itc_loss"), training.get("ln_batch")
    if itc is None and cell["arm"] == "infonce":
        itc = training.get("loss")
    left_plateau = None if itc is None or not ln_batch else itc < design.plateau_fraction * ln_batch
    collapsed = (ratio is not None and ratio < design.collapse_factor) or left_plateau is False
    return {"rsum_over_chance": ratio, "left_plateau": left_plateau, "collapsed": bool(collapsed)}


def _key(c: dict) -> tuple:
    return (c["arm"], c["level"], c.get("teacher", "learned"))


def _by_pair(cells: list[dict]) -> dict[tuple, dict]:
    """(arm, level, teacher) -> {pair: cell}, study cells only."""
    out: dict[tuple, dict] = {}
    for c in cells:
        if c.get("stage", "study") == "study":
            out.setdefault(_key(c), {})[(c["generator_seed"], c["seed"])] = c
    return out


def _usable(cell: dict | None, metric: str) -> float | None:
    if cell is None or cell["collapse"]["collapsed"]:
        return None
    value = cell["test"].get(metric)
    return None if value is None else float(value)


def contrast(table: dict, terms: list[tuple], metric: str) -> tuple[list[float], list, list]:
    """Per pair: sum of coefficient x metric over ``terms`` ((coefficient, (arm, level,
    teacher)), or (coefficient, key, metric) for a term read on its own metric: a difference of
    two metrics within one cell); pairs where a term is missing or collapsed are left out and
    returned apart."""
    pairs = sorted(set.union(*(set(table.get(t[1], {})) for t in terms)), key=str)
    diffs, used, dropped = [], [], []
    for p in pairs:
        values = [_usable(table.get(t[1], {}).get(p), t[2] if len(t) > 2 else metric) for t in terms]
        if any(v is None for v in values):
            dropped.append(list(p))
            continue
        diffs.append(sum(t[0] * v for t, v in zip(terms, values, strict=True)))  # type: ignore[operator]
        used.append(list(p))
    return diffs, used, dropped


def _test(diffs: list[float], used: list, dropped: list) -> dict:
    if len(diffs) < 2:
        return {"n": len(diffs), "pairs": used, "dropped": dropped, "p": math.nan, "p_sign_flip": math.nan}
    return {**compare_pairs(diffs), "pairs": used, "dropped": dropped}


def _holm_into(rows: list[dict], alpha: float) -> None:
    finite = [i for i, r in enumerate(rows) if not math.isnan(r["p"])]
    for key, out in (("p", "p_holm"), ("p_sign_flip", "p_sign_flip_holm")):
        adjusted = holm([rows[i][key] for i in finite])
        for i, a in zip(finite, adjusted, strict=True):
            rows[i][out] = a
    for r in rows:
        r.setdefault("p_holm", math.nan)
        r.setdefault("p_sign_flip_holm", math.nan)


def _verdict(row: dict, alpha: float, up: str, down: str) -> str:
    if row["n"] < 2 or math.isnan(row["p_holm"]):
        return "not measured"
    if row["p_holm"] < alpha:
        return up if row["mean"] > 0 else down
    return "not resolved"


# -- the analyses ---------------------------------------------------------------------
def premise(table: dict, design: Design) -> list[dict]:
    rows = []
    for direction in design.directions:
        metric = strong_metric(direction, design.relevance)
        terms = [(1.0, ("infonce", direction, "learned")), (-1.0, ("infonce", "balanced", "learned"))]
        rows.append({"direction": direction, "metric": metric, **_test(*contrast(table, terms, metric))})
    _holm_into(rows, design.alpha)
    for r in rows:
        v = _verdict(r, design.alpha, "rises", "holds")
        r["verdict"] = {"holds": "holds", "rises": "does not hold (it rises)"}.get(v, f"does not hold ({v})")
        r["holds"] = v == "holds"
    return rows


def interaction_terms(arm: str, direction: str, teacher: str = "learned") -> list[tuple[float, tuple]]:
    return [
        (1.0, (arm, direction, teacher)),
        (-1.0, ("infonce", direction, "learned")),
        (-1.0, (arm, "balanced", teacher)),
        (1.0, ("infonce", "balanced", "learned")),
    ]


def primary(table: dict, design: Design) -> list[dict]:
    rows = []
    for h in design.hypotheses():
        terms = interaction_terms(h["arm"], h["direction"])
        rows.append({**h, **_test(*contrast(table, terms, h["metric"]))})
        for level in ("balanced", h["direction"]):  # the two differences the interaction is made of
            simple = [(1.0, (h["arm"], level, "learned")), (-1.0, ("infonce", level, "learned"))]
            diffs, used, dropped = contrast(table, simple, h["metric"])
            rows[-1][f"effect_{'balanced' if level == 'balanced' else 'imbalanced'}"] = _test(diffs, used, dropped)
    _holm_into(rows, design.alpha)
    for r in rows:
        r["verdict"] = _verdict(r, design.alpha, "supported", "contradicted (the arm hurts the strong side)")
    return rows


def cross_modal(table: dict, design: Design, metric: str = CROSS) -> dict:
    """(arm − infonce) rsum per arm and level; the non-inferiority margin is the smallest effect
    the design detects at the pooled pair s.d."""
    rows = []
    for arm in design.structure_arms:
        for level in ("balanced", *design.directions):
            terms = [(1.0, (arm, level, "learned")), (-1.0, ("infonce", level, "learned"))]
            diffs, used, dropped = contrast(table, terms, metric)
            rows.append({"arm": arm, "level": level, **_test(diffs, used, dropped)})
    variances = [r["sd"] ** 2 for r in rows if r["n"] >= 2]
    n = min((r["n"] for r in rows if r["n"] >= 2), default=0)
    sd = math.sqrt(statistics.fmean(variances)) if variances else math.nan
    margin = smallest_detectable(sd, n, design.alpha, design.power) if n >= 2 else math.nan
    for r in rows:
        if r["n"] >= 2 and not math.isnan(margin):
            r["non_inferiority"] = non_inferiority(r["diffs"], margin, design.alpha)
        else:
            r["non_inferiority"] = {"verdict": "not measured"}
    return {
        "metric": metric,
        "pooled_sd": sd,
        "pairs": n,
        "alpha": design.alpha,
        "power": design.power,
        "margin": margin,
        "rows": rows,
    }


def reranking(table: dict, design: Design, cells: list[dict]) -> dict | None:
    """A --fusion study's cross-modal outcomes after ITM re-ranking: the cross-modal cost on the
    re-ranked rsum, and per arm and level the re-ranker's own change (re-ranked − ITC rsum of
    each pair's cell: paired within the cell). None when no cell was re-ranked."""
    if not any(RERANKED in c["test"] for c in cells if c.get("stage", "study") == "study"):
        return None
    gain = []
    for arm in design.arms:
        for level in ("balanced", *design.directions):
            key = (arm, level, "learned")
            diffs, used, dropped = contrast(table, [(1.0, key, RERANKED), (-1.0, key)], CROSS)
            gain.append({"arm": arm, "level": level, **_test(diffs, used, dropped)})
    return {"cross_modal": cross_modal(table, design, RERANKED), "gain": gain}


def teacher_factor(table: dict, design: Design) -> dict:
    direction = design.teacher_direction
    metric = strong_metric(direction, design.relevance)
    rows, contrasts = [], []
    for arm in design.teacher_arms:
        if arm not in design.arms:
            continue
        for teacher in ("learned", *design.teachers):
            terms = interaction_terms(arm, direction, teacher)
            row = {"arm": arm, "teacher": teacher, **_test(*contrast(table, terms, metric))}
            for level in ("balanced", direction):
                simple = [(1.0, (arm, level, teacher)), (-1.0, ("infonce", level, "learned"))]
                key = f"effect_{'balanced' if level == 'balanced' else 'imbalanced'}"
                row[key] = _test(*contrast(table, simple, metric))
            rows.append(row)
        for teacher in design.teachers:  # each control against the learned teacher, under imbalance
            terms = [(1.0, (arm, direction, teacher)), (-1.0, (arm, direction, "learned"))]
            contrasts.append({"arm": arm, "teacher": teacher, **_test(*contrast(table, terms, metric))})
    _holm_into(contrasts, design.alpha)
    for c in contrasts:
        c["verdict"] = _verdict(c, design.alpha, "above the learned teacher", "below the learned teacher")
    return {"direction": direction, "metric": metric, "rows": rows, "contrasts": contrasts}


def summarize(cells: list[dict], design: Design) -> list[dict]:
    """Mean ± s.d. over the non-collapsed pairs per arm x level x teacher; collapsed counted."""
    rows = []
    for (arm, level, teacher), members in _by_pair(cells).items():
        ok = [c for c in members.values() if not c["collapse"]["collapsed"]]
        stats = {}
        for metric in shown_metrics(design.relevance):
            values = [float(c["test"][metric]) for c in ok if metric in c["test"]]
            if values:
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                stats[metric] = {"mean": statistics.fmean(values), "sd": sd, "n": len(values)}
        strength = next(iter(members.values()))["strength"]
        rows.append(
            {
                "arm": arm,
                "level": level,
                "strength": strength,
                "teacher": teacher,
                "n": len(members),
                "collapsed": len(members) - len(ok),
                "metrics": stats,
            }
        )
    order = {a: i for i, a in enumerate(design.arms)}
    levels = {lv: i for i, lv in enumerate(("balanced", *design.directions))}
    return sorted(
        rows, key=lambda r: (r["teacher"] != "learned", r["teacher"], levels.get(r["level"], 9), order.get(r["arm"], 9))
    )


def chance_levels(cells: list[dict], design: Design) -> dict[str, float]:
    """Mean chance level (a constant model) over the pairs' test splits."""
    out: dict[str, list[float]] = {}
    seen = set()
    for c in cells:
        if c["generator_seed"] in seen or c.get("stage", "study") != "study":
            continue
        seen.add(c["generator_seed"])
        for k, v in c.get("chance", {}).items():
            out.setdefault(k, []).append(float(v))
    return {k: statistics.fmean(v) for k, v in out.items() if k in shown_metrics(design.relevance)}


def analyse(cells: list[dict], design: Design) -> dict:
    for c in cells:
        c["collapse"] = collapse(c, design)
    table = _by_pair(cells)
    collapsed = [
        {k: c[k] for k in ("arm", "level", "strength", "teacher", "stage", "generator_seed", "seed", "run_dir")}
        | {"test_rsum": c["test"].get(CROSS), **c["collapse"], "final_loss": (c.get("training") or {}).get("loss")}
        for c in cells
        if c["collapse"]["collapsed"]
    ]
    return {
        "relevance": design.relevance,
        "alpha": design.alpha,
        "collapsed": collapsed,
        "premise": premise(table, design),
        "primary": primary(table, design),
        "cross_modal": cross_modal(table, design),
        **({"rerank": rr} if (rr := reranking(table, design, cells)) else {}),
        "teacher": teacher_factor(table, design),
        "summary": summarize(cells, design),
        "chance": chance_levels(cells, design),
        "rules": {
            "collapse_factor": design.collapse_factor,
            "plateau_fraction": design.plateau_fraction,
            "gate_tolerance": design.gate_tolerance,
        },
    }
