"""Render the study from ``results.json`` alone: ``report.md``, ``tradeoff.png`` and one
``difference_<direction>.png`` per imbalance direction (and the W&B media of them).

    python -m experiments.imbalance.report experiments/imbalance/results.json [--out DIR]

Every number in the report is read from results.json; the written conclusion is composed
from the verdicts there, whatever they say.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ARM_STYLE = {  # marker, colour: the same arm looks the same in every figure
    "infonce": ("o", "C0"),
    "triplet": ("v", "C7"),
    "relation_kd": ("s", "C2"),
    "covlr": ("D", "C3"),
    "sad": ("^", "C1"),
}
SHOWN = ("rsum", "i2t/R@1", "t2i/R@1", "ndcg_single@10", "i2i/NDCG@10", "t2t/NDCG@10", "i2i/R@1", "t2t/R@1")


def _fmt(ci: dict) -> str:
    """The difference, its 95% interval and, where the analysis gave one, the family-wise
    (Bonferroni) interval the verdicts use."""
    out = f"{ci['difference']:+.2f} [{ci['low']:+.2f}, {ci['high']:+.2f}]"
    if "family_low" in ci:
        out += f" [{ci['family_low']:+.2f}, {ci['family_high']:+.2f}]"
    return out


def _cell(stats: dict | None) -> str:
    return "–" if stats is None else f"{stats['mean']:.1f} ± {stats['sd']:.1f}"


def summary_table(results: dict, direction: str) -> str:
    rows = [r for r in results["summary"] if r["direction"] == direction]
    head = "| strength | arm | n | " + " | ".join(SHOWN) + " |"
    lines = [head, "|" + "---|" * (3 + len(SHOWN))]
    for r in rows:
        cells = [_cell(r["metrics"].get(m)) for m in SHOWN]
        lines.append(f"| {r['strength']:g} | {r['arm']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reference_table(results: dict) -> str:
    keys = ("i2i/NDCG@10", "t2t/NDCG@10", "i2i/R@1", "t2t/R@1")
    lines = ["| row | " + " | ".join(keys) + " |", "|" + "---|" * (1 + len(keys))]
    duplicates: list[str] = []
    for g, metrics in sorted(results.get("reference_alone", {}).items()):
        lines.append(f"| reference alone, generator seed {g} | " + " | ".join(f"{metrics[k]:.1f}" for k in keys) + " |")
        shares = {k.split("/", 1)[1]: v for k, v in metrics.items() if k.startswith("duplicate_captions/")}
        if shares:
            cells = ", ".join(f"{split} {share:.2f}%" for split, share in shares.items())
            duplicates.append(f"generator seed {g}: {cells}")
    for g, chance in sorted(results.get("chance", {}).items()):
        lines.append(
            f"| chance (a constant model), generator seed {g} | "
            + " | ".join(f"{chance[k]:.1f}" if k in chance else "–" for k in keys)
            + " |"
        )
    if duplicates:
        lines += ["", "Captions whose text another image of the same split also has: " + "; ".join(duplicates) + "."]
    return "\n".join(lines)


def verdict_table(results: dict, baseline: str) -> str:
    comps = [c for c in results["comparisons"] if c["baseline"] == baseline]
    single, cross = results["single_measure"], results["cross_measure"]
    level = results["bootstrap"].get("family_level")
    ci = "[95% CI]" + (f" [{100 * level:.2f}% CI]" if level else "")
    lines = [
        f"| direction | strength | arm − {baseline} | pairs | Δ {single} {ci} | Δ {cross} {ci} "
        "| single-modal | cross-modal | claim | claim at 95% per comparison |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in comps:
        unadjusted = c.get("unadjusted", c)["claim"]
        lines.append(
            f"| {c['direction']} | {c['strength']:g} | {c['arm']} | {len(c['pairs'])} | {_fmt(c[single])} "
            f"| {_fmt(c[cross])} | {c['single']} | {c['cross']} | {c['claim']} | {unadjusted} |"
        )
    return "\n".join(lines)


def conclusion(results: dict) -> str:
    """Sentences composed from the verdicts: per structure-preserving arm and direction, the
    strengths where the claim reproduces, does not, or is unresolved; then the meta step."""
    out = []
    comps = results["comparisons"]
    for arm in ("relation_kd", "covlr", "sad"):
        for direction in results["design"]["directions"]:
            rows = [c for c in comps if c["arm"] == arm and c["baseline"] == "infonce" and c["direction"] == direction]
            if not rows:
                continue
            by = {
                k: [f"{c['strength']:g}" for c in rows if c["claim"] == k]
                for k in ("reproduces", "does not reproduce", "not resolved")
            }
            parts = [f"{k} at strength {', '.join(v)}" for k, v in by.items() if v]
            out.append(f"- **{arm}** against infonce, {direction}: the claim {'; '.join(parts)}.")
    out += _components(results)
    meta = [c for c in comps if c["arm"] == "covlr" and c["baseline"] == "relation_kd"]
    if meta:
        single = results["single_measure"]
        adds = [c for c in meta if c["single"] == "up" and c["cross"] in ("equivalent", "gain")]
        if not adds:
            out.append(
                f"- **The meta step** (covlr − relation_kd): at no level does it resolvably raise {single} without a "
                "cross-modal cost: the meta step adds nothing resolved beyond relation_kd."
            )
        else:
            where = ", ".join(f"{c['direction']} {c['strength']:g}" for c in adds)
            out.append(
                f"- **The meta step** (covlr − relation_kd) raises {single} without a cross-modal cost at: {where}."
            )
    return "\n".join(out)


COMPONENTS = ("i2i/NDCG@10", "t2t/NDCG@10", "i2i/R@1")  # the single-modal measure's halves; label-based i2i


def _components(results: dict) -> list[str]:
    """For every resolved single-modal rise against infonce: which half of the measure moved, and
    label-based i2i R@1 (labels no reference saw), as differences of means over the same pairs
    (descriptive: no interval)."""
    means = {(r["direction"], r["strength"], r["arm"]): r["metrics"] for r in results["summary"]}
    rises = [c for c in results["comparisons"] if c["baseline"] == "infonce" and c["single"] == "up"]
    parts, seen = [], set()
    for c in rises:
        key = (c["arm"], c["strength"]) if c["strength"] == 0 else (c["arm"], c["direction"], c["strength"])
        if key in seen:  # the balanced data: one set of cells for both directions
            continue
        seen.add(key)
        arm, base = (
            means.get((c["direction"], c["strength"], c["arm"])),
            means.get((c["direction"], c["strength"], "infonce")),
        )
        if not arm or not base or not all(k in arm and k in base for k in COMPONENTS):
            continue
        deltas = ", ".join(f"{k} {arm[k]['mean'] - base[k]['mean']:+.1f}" for k in COMPONENTS)
        level = "balanced" if c["strength"] == 0 else f"{c['direction']} {c['strength']:g}"
        parts.append(f"{c['arm']} {level}: {deltas}")
    if not parts:
        return []
    return [
        "- **Where the resolved single-modal rises come from** (differences of means over the pairs against "
        "infonce; no interval): " + "; ".join(parts) + "."
    ]


def write_report(results: dict, out: Path) -> None:
    design = results["design"]
    strengths = ", ".join(f"{s:g}" for s in design["strengths"])
    figures = write_figures(results, out)
    parts = [
        "# Modal-imbalance study (synthetic benchmark v3, learned references)",
        f"Generated by `{results['command']}` in {results['duration_s'] / 60:.0f} min; every number below is "
        "read from `results.json` (`python -m experiments.imbalance.report results.json` regenerates this file).",
        "## Design",
        f"- arms: {', '.join(design['arms'])} (relation_kd = CoVLR's relation loss without the meta step);\n"
        f"- imbalance: {', '.join(design['directions'])} at strengths {strengths} "
        "(0 = the balanced data, shared);\n"
        f"- seeds {design['seeds']} x generator seeds {design['generator_seeds']}, paired across arms;\n"
        f"- the reference embeds: {design.get('reference_input', 'what the student sees')};\n"
        f"- every cell: `python -m vlr.train {' '.join(design['overrides'])} objective=... imbalance=... seed=...` "
        "(each cell's exact command is in results.json);\n"
        f"- single-modal measure: {results['single_measure']} (i2i + t2t NDCG@10, ROUGE-L relevance); cross-modal: "
        f"{results['cross_measure']}; differences paired with 95% bootstrap intervals over "
        f'{results["bootstrap"]["units"]} ({results["bootstrap"]["resamples"]} resamples); "equivalent" = the whole '
        f"rsum interval inside ±{results['margin']:g};\n"
        f"- verdicts (single-modal, cross-modal, claim) use {_family(results)}, the second interval of each "
        "difference; the last column gives the claim at 95% per comparison (the first interval), for reference.",
        "## References alone and chance",
        reference_table(results),
        "## Loss weights (chosen on val, the same grid and criterion for every tuned arm)",
        _tuning(results.get("tuning", {})),
    ]
    for direction in design["directions"]:
        parts += [f"## {direction}: mean ± sd over pairs (test split)", summary_table(results, direction)]
    parts += [
        "## Verdicts: each arm against infonce",
        verdict_table(results, "infonce"),
        "## Does the meta step add anything? covlr against relation_kd",
        verdict_table(results, "relation_kd"),
        "## Conclusion",
        conclusion(results),
        "## Figures",
        *[f"![{f.stem}]({f.name})" for f in figures],
        "## Reproducibility",
        _reproduced(results.get("reproduced")),
    ]
    (out / "report.md").write_text("\n\n".join(parts) + "\n")


def _family(results: dict) -> str:
    level = results["bootstrap"].get("family_level")
    if level is None:
        return "the 95% intervals"
    return f"{100 * level:.2f}% intervals from the same bootstrap ({results['bootstrap']['family']}: 5% family-wise)"


def _tuning(tuning: dict) -> str:
    if not tuning.get("arms"):
        return "(nothing tuned: no structure-preserving arm in the study)"
    lines = [
        f"Criterion: {tuning['criterion']} (generator seed {tuning['generator_seed']}, seeds {tuning['seeds']}, "
        "balanced data). The factor means:",
        "",
        *[f"- {arm}: {means}" for arm, means in tuning["factor_means"].items() if arm in tuning["arms"]],
        "",
        "| arm | " + " | ".join(f"x{f:g}" for f in tuning["grid"]) + " | chosen |",
        "|---|" + "---|" * (len(tuning["grid"]) + 1),
    ]
    for arm, t in tuning["arms"].items():
        rows = {r["factor"]: r for r in t["rows"]}
        edge = " (grid edge)" if t["at_edge"] else ""
        cells = [
            f"{rows[f]['val_score']:.1f} ({', '.join(f'{x:.0f}' for x in rows[f]['val_score_per_seed'])})"
            for f in tuning["grid"]
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | x{t['chosen']:g}{edge} |")
    lines += ["", "Each cell: the mean over the tuning seeds (each seed's score)."]
    return "\n".join(lines)


def _reproduced(check: dict | None) -> str:
    if not check:
        return "(not checked in this run)"
    verdict = "the same test metrics" if check["equal"] else f"DIFFERENT test metrics: {check.get('differing')}"
    return f"Re-running `{check['command']}` alone gave {verdict}."


def _interval_name(results: dict) -> str:
    level = results["bootstrap"].get("family_level")
    return "95% CI" if level is None else f"{100 * level:.2f}% CI (family-wise: the verdicts')"


def write_figures(results: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    design = results["design"]
    single, cross = results["single_measure"], results["cross_measure"]
    chance = next(iter(results.get("chance", {}).values()), {})
    paths = []
    fig, axes = plt.subplots(
        1, len(design["directions"]), figsize=(6.5 * len(design["directions"]), 5.5), squeeze=False
    )
    for ax, direction in zip(axes[0], design["directions"], strict=True):
        for arm in design["arms"]:
            rows = [r for r in results["summary"] if r["direction"] == direction and r["arm"] == arm]
            rows = [r for r in rows if single in r["metrics"] and cross in r["metrics"]]
            if not rows:
                continue
            marker, colour = ARM_STYLE.get(arm, ("x", "k"))
            xs = [r["metrics"][cross]["mean"] for r in rows]
            ys = [r["metrics"][single]["mean"] for r in rows]
            xe = [1.96 * r["metrics"][cross]["sd"] / max(1, r["metrics"][cross]["n"]) ** 0.5 for r in rows]
            ye = [1.96 * r["metrics"][single]["sd"] / max(1, r["metrics"][single]["n"]) ** 0.5 for r in rows]
            ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker=marker, color=colour, capsize=3, label=arm, linewidth=1)
            for x, y, r in zip(xs, ys, rows, strict=True):
                ax.annotate(
                    f"{r['strength']:g}", (x, y), textcoords="offset points", xytext=(5, -10), fontsize=8, color=colour
                )
        if cross in chance:
            ax.axvline(chance[cross], color="grey", linestyle=":", linewidth=1)
            ax.annotate(
                "chance",
                (chance[cross], ax.get_ylim()[0]),
                fontsize=8,
                color="grey",
                rotation=90,
                xytext=(3, 5),
                textcoords="offset points",
            )
        if single in chance:  # usually far below the arms: stated, not drawn
            ax.text(
                0.01, 0.01, f"chance: {single} {chance[single]:.1f}", transform=ax.transAxes, fontsize=8, color="grey"
            )
        ax.set_title(f"{direction}: point labels = imbalance strength", fontsize=10)
        ax.set_xlabel(f"cross-modal {cross} (i2t + t2i R@1,5,10)  → better")
        ax.set_ylabel(f"single-modal {single} (i2i + t2t NDCG@10)  → better")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(
        "Trade-off per arm (means over pairs; bars: ±1.96 s.e. over pairs, descriptive: the verdicts' paired "
        "intervals are in report.md)",
        fontsize=10,
    )
    fig.tight_layout()
    paths.append(out / "tradeoff.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    for direction in design["directions"]:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
        for ax, measure in zip(axes, (single, cross), strict=True):
            compared = [a for a in design["arms"] if a != "infonce"]
            for i, arm in enumerate(compared):
                rows = [
                    c
                    for c in results["comparisons"]
                    if c["direction"] == direction and c["arm"] == arm and c["baseline"] == "infonce"
                ]
                if not rows:
                    continue
                marker, colour = ARM_STYLE.get(arm, ("x", "k"))
                dodge = 0.025 * (i - (len(compared) - 1) / 2)  # side by side, so no interval hides another
                xs = [c["strength"] + dodge for c in rows]
                ys = [c[measure]["difference"] for c in rows]
                # the verdicts' (family-wise) interval where the analysis gave one; percentile ends
                # can sit a rounding error inside the point estimate
                low, high = ("family_low", "family_high") if "family_low" in rows[0][measure] else ("low", "high")
                err = [
                    [max(0.0, c[measure]["difference"] - c[measure][low]) for c in rows],
                    [max(0.0, c[measure][high] - c[measure]["difference"]) for c in rows],
                ]
                ax.errorbar(xs, ys, yerr=err, marker=marker, color=colour, capsize=3, label=arm, linewidth=1)
            ax.axhline(0, color="black", linewidth=0.8)
            if measure == cross:
                ax.axhspan(
                    -results["margin"],
                    results["margin"],
                    color="grey",
                    alpha=0.15,
                    label=f"±{results['margin']:g} (equivalence)",
                )
            ax.set_xlabel(f"{direction} strength")
            ax.set_ylabel(f"Δ {measure} vs infonce  ↑ better")
            ax.set_title(f"{measure}: paired difference, {_interval_name(results)}", fontsize=10)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / f"difference_{direction}.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths


def results_rows(results: dict) -> tuple[list[str], list[list[object]]]:
    """The verdict table as rows (W&B Table)."""
    single, cross = results["single_measure"], results["cross_measure"]
    columns = [
        "direction",
        "strength",
        "arm",
        "baseline",
        "pairs",
        f"d_{single}",
        f"{single}_low",
        f"{single}_high",
        f"d_{cross}",
        f"{cross}_low",
        f"{cross}_high",
        "single",
        "cross",
        "claim",
    ]
    rows = [
        [
            c["direction"],
            c["strength"],
            c["arm"],
            c["baseline"],
            len(c["pairs"]),
            c[single]["difference"],
            c[single]["low"],
            c[single]["high"],
            c[cross]["difference"],
            c[cross]["low"],
            c[cross]["high"],
            c["single"],
            c["cross"],
            c["claim"],
        ]
        for c in results["comparisons"]
    ]
    return columns, rows


def log_to_wandb(results: dict, out: Path, save_dir: Path, project: str = "vlr") -> Path:
    from vlr.tracking.wandb_report import log_summary_run

    images = {p.stem: p for p in [out / "tradeoff.png", *sorted(out.glob("difference_*.png"))] if p.is_file()}
    return log_summary_run(
        project=project,
        name="imbalance-study",
        save_dir=save_dir,
        images=images,
        tables={"verdicts": results_rows(results)},
    )


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
