"""Render the study from ``results.json`` alone: ``report.md`` and its figures.

    python -m experiments.imbalance.report experiments/imbalance/results.json [--out DIR]

Every number is read from results.json and every verdict sentence is composed from the
analysis's verdicts, whatever they say. The hypotheses section is the design's (written
before any cell ran: `Design.hypotheses`), rendered before any result.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# how to make the data harder when the premise fails (stated in the report, never applied silently)
HARDER = (
    "the imbalance strength (`--strengths text_weak=1 image_weak=1`, or a probe grid reaching further) and fewer "
    "training images per pair (`--override data.num_train=200`), which leaves the strong modality more dependent "
    "on what the weak one teaches it"
)


def _num(x, digits: int = 2, signed: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.3g}"


def _ci(row: dict) -> str:
    if row.get("n", 0) < 2:
        return f"– (n={row.get('n', 0)})"
    return f"{_num(row['mean'])} [{_num(row['low'])}, {_num(row['high'])}]"


def _dropped(row: dict) -> str:
    return f" ({len(row['dropped'])} pair(s) left out: collapsed or missing)" if row.get("dropped") else ""


def _table(columns: list[str], rows) -> list[str]:
    """A Markdown table's lines: the header, its rule, then one line per row (a list of cells)."""
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


# -- the opening paragraph ----------------------------------------------------------------
def answer(results: dict) -> str:
    prem = results["premise"]
    failed = [r for r in prem if not r["holds"]]
    parts = []
    per_direction = "; ".join(
        f"under {r['direction']}, infonce's {r['metric']} changes by {_ci(r)} (Holm p {_p(r.get('p_holm'))}, "
        f"sign-flip p {_p(r.get('p_sign_flip'))}): {r['verdict']}"
        for r in prem
    )
    if failed:
        names = ", ".join(r["direction"] for r in failed)
        parts.append(
            f"**The premise does not hold under {names}**: under infonce, weakening the other modality does not "
            f"resolvably lower the strong modality's ground-truth single-modal NDCG@10 ({per_direction}). Where the "
            "premise fails there is no loss for structure preservation to protect, so the interactions below answer a "
            f"question the data does not pose. To make the data harder, the knobs are {HARDER}."
        )
    else:
        parts.append(f"**The premise holds**: {per_direction}.")
    gate = results.get("gate")
    if gate:
        change = f"{100 * gate['relative_change']:.1f}% (tolerance {100 * gate['tolerance']:.0f}%)"
        parts.append(
            f"The convergence gate passed: doubling balanced infonce's epochs moves its val rsum by {change}."
            if gate["passed"]
            else f"**The convergence gate failed**: doubling balanced infonce's epochs ({gate['epochs']} to "
            f"{2 * gate['epochs']}) moves its val rsum by {change}, so the cells are still training and every "
            "comparison below is between arms at the same, unconverged budget."
        )
    prim = results["primary"]
    lines = "; ".join(
        f"{h['arm']} under {h['direction']} {_ci(h)} (Holm p {_p(h.get('p_holm'))}: {h['verdict']})" for h in prim
    )
    parts.append(
        f"The pre-registered interaction (arm − infonce on the strong side's {results['relevance']} NDCG@10, under "
        f"imbalance minus on balanced data; 95% intervals over {_pairs(results)} independent pairs): {lines}."
    )
    cm = results["cross_modal"]
    imbalanced = [r for r in cm["rows"] if r["level"] != "balanced"]
    cost = "; ".join(f"{r['arm']} {r['level']} {_ci(r)} ({r['non_inferiority']['verdict']})" for r in imbalanced)
    parts.append(
        f"Cross-modal cost (arm − infonce rsum under imbalance; non-inferiority margin {_num(cm['margin'], 1, False)}, "
        f"the smallest effect detectable at alpha {cm['alpha']} with {int(100 * cm['power'])}% power): {cost}."
    )
    n = len(results["collapsed"])
    baseline = sum(1 for c in results["collapsed"] if c["arm"] == "infonce" and c["stage"] == "study")
    parts.append(
        f"{n} cell(s) collapsed (listed under Baselines) and are left out of every comparison they enter"
        + (f"; {baseline} of them infonce baselines, so the no-collapsed-baseline rule fails." if baseline else ".")
        if n
        else "No cell collapsed."
    )
    if results.get("rerank"):
        parts.append(rerank_answer(results))
    return " ".join(parts)


def _pairs(results: dict) -> int:
    return len(results["design"]["pairs"])


# -- sections ---------------------------------------------------------------------------
def design_section(results: dict) -> str:
    d = results["design"]
    strengths = ", ".join(f"{k} {v:g}" for k, v in d["strengths"].items())
    teachers = ", ".join(f"{t} (`{' '.join(o) or 'the preset reference'}`)" for t, o in d["teachers"].items())
    return "\n".join(
        [
            f"- pairs: {_pairs(results)} (generator seeds {d['pairs']}); each pair has its own generated train, val "
            "and test data and its own learned reference, and trains with seed = its generator seed, so pairs are "
            "independent;",
            f"- arms: {', '.join(d['arms'])} (relation_kd = CoVLR's relation loss without the meta step), at balance "
            f"and at each direction's strength: {strengths} ({results['calibration']['source']});",
            f"- every cell: `python -m vlr.train experiment={d['preset']} objective=ARM imbalance=... "
            f"data.generator_seed=G seed=G` plus the tuned overrides{_and(d['overrides'])} "
            "(each cell's exact command is in results.json);",
            f"- primary measure: the strong side's ground-truth NDCG@10 ({results['relevance']} relevance: "
            "i2i under text_weak, t2t under image_weak); cross-modal: rsum;",
            f"- teacher factor: {teachers}; crossed with {', '.join(d['teacher_arms']) or 'no arm'} at "
            f"{' and '.join(d.get('teacher_levels', ['balanced', d['teacher_direction']]))} only: one "
            "structure-preserving arm without the meta step isolates what the teacher gives, under the imbalance "
            "the question is about; the full cross (every arm, every level) would more than double the study's "
            "cost;",
            f"- statistics: paired t (two-sided, 95% intervals) with the exact sign-flip p-value (all 2^n sign "
            f"assignments) beside it; Holm over the {len(results['primary'])} hypotheses (alpha {results['alpha']}); "
            "the premise and the teacher contrasts are Holm-corrected within their own families; a verdict is the "
            "Holm-adjusted paired t's (two-sided), the sign-flip p a robustness check shown beside it;",
            f"- collapse: test rsum below {results['rules']['collapse_factor']:g}x chance, or a final InfoNCE loss "
            f"above {results['rules']['plateau_fraction']:g} ln(batch); such cells are listed, never averaged in.",
        ]
    )


def _and(overrides: list[str]) -> str:
    return f" and `{' '.join(overrides)}`" if overrides else ""


def hypotheses_section(results: dict) -> str:
    return "\n".join(f"- **{h['id']}**: {h['text']}" for h in results["design"]["hypotheses"])


def premise_table(results: dict) -> str:
    columns = ["direction", "measure", "infonce: imbalanced − balanced [95% CI]", "pairs", "p (t)", "p (sign flip)"]
    rows = (
        [r["direction"], r["metric"], _ci(r) + _dropped(r), r["n"], _p(r["p"]), _p(r["p_sign_flip"]), _p(r["p_holm"])]
        + [r["verdict"]]
        for r in results["premise"]
    )
    return "\n".join(_table([*columns, "Holm p", "verdict"], rows))


def primary_table(results: dict) -> str:
    columns = ["hypothesis", "arm", "direction", "balanced: arm − infonce", "imbalanced: arm − infonce"]
    columns += [
        "interaction [95% CI]",
        "pairs",
        "p (t)",
        "p (sign flip)",
        "Holm p (t)",
        "Holm p (sign flip)",
        "verdict",
    ]
    rows = (
        [
            h["id"],
            h["arm"],
            h["direction"],
            _ci(h["effect_balanced"]),
            _ci(h["effect_imbalanced"]),
            _ci(h) + _dropped(h),
        ]
        + [h["n"], _p(h["p"]), _p(h["p_sign_flip"]), _p(h["p_holm"]), _p(h["p_sign_flip_holm"]), h["verdict"]]
        for h in results["primary"]
    )
    return "\n".join(_table(columns, rows))


def cross_table(results: dict, cm: dict | None = None) -> str:
    cm = cm or results["cross_modal"]
    head = (
        f"Margin: {_num(cm['margin'], 2, False)} rsum points, the smallest mean difference a two-sided paired t-test "
        f"at alpha {cm['alpha']} detects with {int(100 * cm['power'])}% power over {cm['pairs']} pairs at the pooled "
        f"pair s.d. of these differences ({_num(cm['pooled_sd'], 2, False)}). Non-inferior: the one-sided 95% lower "
        "bound lies above −margin; inferior: the upper bound lies below it."
    )
    name = "re-ranked rsum" if cm["metric"] != "rsum" else "rsum"
    columns = ["arm", "level", f"arm − infonce {name} [95% CI]", "pairs", "p (t)", "p (sign flip)", "non-inferiority"]
    rows = (
        [r["arm"], r["level"], _ci(r) + _dropped(r), r["n"], _p(r["p"]), _p(r["p_sign_flip"])]
        + [r["non_inferiority"]["verdict"]]
        for r in cm["rows"]
    )
    return "\n".join([head, "", *_table(columns, rows)])


def rerank_k(results: dict) -> str:
    """The k of a --fusion study, from its cells' overrides."""
    ks = [o.split("=", 1)[1] for o in results["design"]["overrides"] if o.startswith("eval.rerank.k=")]
    return ks[-1] if ks else "?"


def rerank_answer(results: dict) -> str:
    rr, k = results["rerank"], rerank_k(results)
    cost = "; ".join(
        f"{r['arm']} {r['level']} {_ci(r)} ({r['non_inferiority']['verdict']})"
        for r in rr["cross_modal"]["rows"]
        if r["level"] != "balanced"
    )
    gain = "; ".join(f"{g['arm']} {g['level']} {_ci(g)}" for g in rr["gain"])
    return (
        f"Every cell trained the fusion encoder with ITM, and its test split was also evaluated with ITM re-scoring "
        f"each query's ITC top {k}. The single-modal outcomes above (premise, interaction) are on the ITC "
        "embeddings of these fusion-trained towers: the re-ranker scores image–caption pairs only and cannot "
        f"change them. After re-ranking, the cross-modal cost (arm − infonce re-ranked rsum under imbalance; margin "
        f"{_num(rr['cross_modal']['margin'], 1, False)}): {cost}. What re-ranking itself changes (re-ranked − ITC "
        f"rsum of the same cells): {gain}. {reranker_verdict(rr['gain'])}"
    )


def reranker_verdict(gains: list[dict]) -> str:
    """Whether the re-ranker helps at all: a re-ranker that lowers rsum everywhere is one nobody
    would deploy, and the cost measured after it says what such a re-ranker keeps, not what a
    useful one would."""
    if all(g["high"] < 0 for g in gains):
        return (
            "**Re-ranking lowers rsum in every arm and level** (every interval below 0): this ITM head is weaker "
            "than ITC alone, so the re-ranked cross-modal cost describes a re-ranker that hurts, not a useful one."
        )
    if all(g["low"] > 0 for g in gains):
        return "Re-ranking raises rsum in every arm and level (every interval above 0)."
    return "Re-ranking does not change rsum in the same direction in every arm and level."


def rerank_section(results: dict) -> str:
    rr, k = results["rerank"], rerank_k(results)
    head = (
        f"ITM re-scores each test query's ITC top {k} (i2t and t2i; `eval.rerank.k={k}`, docs/fusion.md). The same "
        "cells as above: single-modal metrics are on the ITC embeddings, unchanged by re-ranking."
    )
    columns = ["arm", "level", "re-ranked − ITC rsum [95% CI]", "pairs", "p (t)", "p (sign flip)"]
    rows = ([g["arm"], g["level"], _ci(g) + _dropped(g), g["n"], _p(g["p"]), _p(g["p_sign_flip"])] for g in rr["gain"])
    return "\n".join(
        [
            head,
            "",
            "What re-ranking changes, per cell (paired within each pair's cell):",
            "",
            *_table(columns, rows),
            "",
            "The cross-modal cost on the re-ranked rsum:",
            "",
            cross_table(results, rr["cross_modal"]),
        ]
    )


def probe_table(results: dict) -> str:
    cal = results["calibration"]
    if not cal.get("probe"):
        return f"Not measured: strengths {cal['chosen']} were {cal['source']}."
    strengths = sorted({s for rows in cal["probe"].values() for s in rows}, key=float)
    lines = [
        "A linear probe (ridge, one-vs-rest) recovers each place's colour and shape from the weakened input "
        "(captions: bag of words; images: 2x2-pooled pixels), trained and tested on weakened data of its own "
        "generator seed. Cells: accuracy % (retained share of the balanced input's above-chance accuracy %).",
        "",
    ]
    table = []
    for direction, rows in cal["probe"].items():
        cells = [f"{rows[s]['accuracy']:.1f} ({rows[s]['retained']:.0f}%)" if s in rows else "–" for s in strengths]
        chance = next(iter(rows.values()))["chance"]
        table.append([direction, f"{chance:.1f}", *cells, f"{cal['chosen'][direction]:g}"])
    lines += _table(["direction", "chance", *(f"strength {s}" for s in strengths), "chosen"], table)
    return "\n".join(lines)


def tuning_section(results: dict) -> str:
    t = results["tuning"]
    lines = [
        f"Criterion: {t['criterion']}; generator seed {t['generator_seed']} (no pair's), seeds {t['seeds']} (no "
        f"pair's), balanced data. Runs per arm: {t['runs_per_arm']} (the same budget for every arm). infonce's "
        "choice is every arm's learning rate and temperature; then each arm's weight: "
        + "; ".join(f"{a}: {m}" for a, m in t["weight_means"].items())
        + ".",
        "",
    ]
    table = []
    for arm, a in t["arms"].items():
        for row in a["rows"]:
            point = ", ".join(f"{k} {v:g}" for k, v in row["point"].items())
            chosen = "**yes**" + (" (grid edge)" if a.get("at_edge") else "") if row["point"] == a["chosen"] else ""
            per = ", ".join(f"{x:.1f}" for x in row["per_seed"])
            table.append([arm, point, f"{row['score']:.1f} ({per})", chosen])
    lines += _table(["arm", "grid point", "score (per seed)", "chosen"], table)
    g = results["gate"]
    verdict = "passed" if g["passed"] else "**FAILED**: the baselines may still be training"
    lines += [
        "",
        f"**Convergence gate** ({verdict}): balanced infonce with the tuned settings, {g['epochs']} vs "
        f"{2 * g['epochs']} epochs: mean val rsum {g['val_rsum']:.1f} ({', '.join(f'{x:.1f}' for x in g['per_seed'])}) "
        f"vs {g['val_rsum_doubled']:.1f} ({', '.join(f'{x:.1f}' for x in g['per_seed_doubled'])}): "
        f"a relative change of {100 * g['relative_change']:.1f}% (tolerance {100 * g['tolerance']:.0f}%).",
    ]
    return "\n".join(lines)


def collapse_section(results: dict) -> str:
    rows = results["collapsed"]
    if not rows:
        return (
            "No cell collapsed: every cell's test rsum is at least the factor x its chance, and every InfoNCE loss "
            "left its plateau."
        )
    columns = ["stage", "arm", "level", "teacher", "generator seed", "seed", "test rsum", "rsum / chance"]
    table = (
        [c["stage"], c["arm"], c["level"], c["teacher"], c["generator_seed"], c["seed"], _num(c["test_rsum"], 1, False)]
        + [_num(c["rsum_over_chance"], 2, False), c["left_plateau"], _num(c["final_loss"], 3, False)]
        for c in rows
    )
    intro = f"{len(rows)} collapsed cell(s), left out of every comparison they enter:"
    return "\n".join([intro, "", *_table([*columns, "left plateau", "final loss"], table)])


def teacher_section(results: dict) -> str:
    t = results["teacher"]
    lines = [
        f"{t['metric']} under {t['direction']} per teacher (secondary): arm − infonce (and the interaction where the "
        "teacher also ran on balanced data); then the arm with each control teacher minus the arm with the learned "
        "one (Holm within these contrasts). A gain that survives the shuffled teacher is regularisation, not "
        "structure.",
        "",
    ]
    columns = ["arm", "teacher", "balanced: arm − infonce", "imbalanced: arm − infonce", "interaction [95% CI]"]
    absent = f"not run (this teacher only under {t['direction']})"

    def row(r: dict) -> list:
        if not r["effect_balanced"].get("n"):  # the teacher did not run on balanced data: no interaction
            return [r["arm"], r["teacher"], absent, _ci(r["effect_imbalanced"]), "–", "–", "–", "–"]
        return [
            r["arm"],
            r["teacher"],
            _ci(r["effect_balanced"]),
            _ci(r["effect_imbalanced"]),
            _ci(r) + _dropped(r),
        ] + [
            r["n"],
            _p(r["p"]),
            _p(r["p_sign_flip"]),
        ]

    lines += _table([*columns, "pairs", "p (t)", "p (sign flip)"], (row(r) for r in t["rows"]))
    contrast = f"teacher − learned teacher ({t['direction']}) [95% CI]"
    lines += [""] + _table(
        ["arm", contrast, "pairs", "Holm p (t)", "Holm p (sign flip)", "verdict"],
        (
            [c["arm"], f"{c['teacher']}: {_ci(c)}", c["n"], _p(c["p_holm"]), _p(c["p_sign_flip_holm"]), c["verdict"]]
            for c in t["contrasts"]
        ),
    )
    return "\n".join(lines)


def summary_table(results: dict) -> str:
    metrics = sorted({m for r in results["summary"] for m in r["metrics"]}, key=_metric_order)
    rows = []
    for r in results["summary"]:
        cells = [
            f"{r['metrics'][m]['mean']:.1f} ± {r['metrics'][m]['sd']:.1f}" if m in r["metrics"] else "–"
            for m in metrics
        ]
        rows.append([r["arm"], r["level"], f"{r['strength']:g}", r["teacher"], f"{r['n']} ({r['collapsed']})", *cells])
    chance = results.get("chance", {})
    if chance:
        rows.append(["chance", "", "", "", "", *(f"{chance[m]:.1f}" if m in chance else "–" for m in metrics)])
    return "\n".join(_table(["arm", "level", "strength", "teacher", "pairs (collapsed)", *metrics], rows))


def _metric_order(m: str) -> tuple:
    return (m != "rsum", "NDCG" in m, m)


def reference_table(results: dict) -> str:
    rows = results.get("reference_alone", {})
    keys = sorted({k for m in rows.values() for k in m if "NDCG@10" in k or k.endswith("R@1")})
    if not keys:
        return "(not measured)"
    table = (
        [g, *(f"{m[k]:.1f}" if k in m else "–" for k in keys)]
        for g, m in sorted(rows.items(), key=lambda kv: (len(str(kv[0])), str(kv[0])))  # 0, 1, ..., 9, 100
    )
    return "\n".join(_table(["generator seed", *keys], table))


def timing_section(results: dict) -> str:
    t = results.get("timings", {})
    blocks = [b for b in t.get("blocks", []) if b["cells"]]
    per_cell = sum(b["seconds"] for b in blocks) / max(1, sum(b["cells"] for b in blocks)) if blocks else None
    stages = ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.get("stages_s", {}).items())
    out = f"Wall time {results['duration_s'] / 60:.0f} min ({stages})."
    if per_cell is not None:
        out += (
            f" Cells run in this invocation: {per_cell:.1f} s per cell on average (inside multiruns, one thread each)."
        )
    return out


def reproduced_section(check: dict | None) -> str:
    if not check:
        return "(not checked in this run)"
    if check.get("error"):
        error = check["error"][-800:]
        return (
            f"Re-running `{check['command']}` alone with an empty data and cache directory FAILED:\n\n```\n{error}\n```"
        )
    verdict = (
        "the same test metrics (within 1e-6)" if check["equal"] else f"DIFFERENT test metrics: {check['differing']}"
    )
    return (
        f"Re-running `{check['command']}` alone, in a fresh process with an empty data and cache directory, "
        f"gave {verdict}."
    )


def write_report(results: dict, out: Path) -> None:
    figures = write_figures(results, out)
    parts = [
        "# Modal-imbalance study: does structure preservation protect the strong modality?",
        f"Generated by `{results['command']}`; every number below is read from `results.json` "
        "(`python -m experiments.imbalance.report results.json` regenerates this file).",
        "## Answer",
        answer(results),
        "## Design",
        design_section(results),
        "## Pre-registered hypotheses (from the study's design, written before its results)",
        hypotheses_section(results),
        "## Premise: does the strong modality suffer under infonce?",
        premise_table(results),
        *_figure(figures, "premise"),
        "## Primary outcome: the interaction",
        primary_table(results),
        *_figure(figures, "interaction"),
        "## Cross-modal cost",
        cross_table(results),
        *_figure(figures, "cross_modal"),
        *(
            ["## With a re-ranker", rerank_section(results), *_figure(figures, "cross_modal_rerank")]
            if results.get("rerank")
            else []
        ),
        "## Matched directions",
        probe_table(results),
        "## Baselines: tuning, convergence and collapse",
        tuning_section(results),
        collapse_section(results),
        "## Teacher quality",
        teacher_section(results),
        *_figure(figures, "teacher"),
        "## Every cell: mean ± s.d. over the non-collapsed pairs (test split)",
        summary_table(results),
        "## References alone",
        reference_table(results),
        "## Reproducibility and cost",
        reproduced_section(results.get("reproduced")),
        timing_section(results),
    ]
    (out / "report.md").write_text("\n\n".join(parts) + "\n")


def _figure(figures: dict[str, Path], name: str) -> list[str]:
    return [f"![{name}]({figures[name].name})"] if name in figures else []


# -- figures: each shows the measure its verdict uses ---------------------------------------
def _interval_plot(ax, rows: list[dict], labels: list[str], colour: str = "C0") -> None:
    for i, r in enumerate(rows):
        diffs = r.get("diffs") or []
        ax.scatter([i] * len(diffs), diffs, s=12, color="grey", alpha=0.6, zorder=2)
        if r.get("n", 0) >= 2:
            ax.errorbar(
                [i],
                [r["mean"]],
                yerr=[[r["mean"] - r["low"]], [r["high"] - r["mean"]]],
                fmt="D",
                color=colour,
                capsize=4,
                zorder=3,
            )
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(rows)), labels, rotation=20, ha="right", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def write_figures(results: dict, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths: dict[str, Path] = {}

    def figure(
        rows: list[dict], labels: list[str], color: str, ylabel: str, title: str, width: float, bars: str = "95% CI"
    ):
        """One interval plot (every figure: pairs as dots, the rows' low-high as bars); returns
        its axes for extras."""
        fig, ax = plt.subplots(figsize=(1.8 + width * len(rows), 4.2))
        _interval_plot(ax, rows, labels, color)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title} (dots: pairs; {bars})", fontsize=9)
        return fig, ax

    def save(fig, name: str) -> None:
        fig.tight_layout()
        paths[name] = out / f"{name}.png"
        fig.savefig(paths[name], dpi=110)
        plt.close(fig)

    prem = results["premise"]
    labels = [f"{r['direction']}\n{r['metric']}" for r in prem]
    ylabel = "infonce: imbalanced − balanced (points)"
    save(figure(prem, labels, "C0", ylabel, "Premise: strong-side ground-truth NDCG@10", 2.2)[0], "premise")

    prim = results["primary"]
    labels = [f"{h['id']} {h['arm']}\n{h['direction']}" for h in prim]
    title = "Primary outcome: (arm − infonce) imbalanced − balanced"
    save(figure(prim, labels, "C3", "interaction on strong-side NDCG@10 (points)", title, 1.6)[0], "interaction")

    # the non-inferiority verdict's own quantity: the one-sided 95% bounds (a 90% interval)
    # against -margin, not the two-sided 95% interval of the table's middle column
    blocks = [("cross_modal", results["cross_modal"], "rsum")]
    if results.get("rerank"):
        blocks.append(("cross_modal_rerank", results["rerank"]["cross_modal"], "re-ranked rsum"))
    for name, cm, metric in blocks:
        rows = [
            {**r, **{k: r["non_inferiority"][k] for k in ("low", "high") if k in r["non_inferiority"]}}
            for r in cm["rows"]
        ]
        labels = [f"{r['arm']}\n{r['level']}\n{r['non_inferiority']['verdict']}" for r in cm["rows"]]
        title = f"Cross-modal cost{' after re-ranking' if name != 'cross_modal' else ''}: one-sided 95% bounds"
        fig, ax = figure(rows, labels, "C2", f"arm − infonce {metric}", title, 1.2, bars="bars: 90% CI")
        if not math.isnan(cm["margin"]):
            ax.axhline(-cm["margin"], color="C3", linestyle="--", label=f"−{cm['margin']:.1f} (non-inferiority margin)")
            ax.legend(fontsize=8)
        save(fig, name)

    # the teacher verdicts' quantity: the arm with each control teacher minus the arm with the
    # learned one, labelled with its Holm verdict
    t = results["teacher"]
    if t["contrasts"]:
        labels = [f"{c['arm']}\n{c['teacher']}\n{c['verdict']}" for c in t["contrasts"]]
        ylabel = f"teacher − learned teacher {t['metric']}"
        title = f"Teacher quality under {t['direction']}"
        save(figure(t["contrasts"], labels, "C1", ylabel, title, 1.4)[0], "teacher")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    out = args.out or args.results.parent
    out.mkdir(parents=True, exist_ok=True)
    write_report(results, out)
    print(f"{out}/report.md and figures written from {args.results}")


if __name__ == "__main__":
    main()
