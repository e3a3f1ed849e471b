"""Compare runs: mean ± std tables per objective and imbalance level, a trade-off plot, and the verdict.

    python -m experiments.compare multirun/2026-11-23/10-00-00 [more run dirs ...] --out report/
    python -m experiments.compare --wandb-project vlr [--wandb-entity me] --out report/

A run is a directory with ``metrics.json`` and ``.hydra/config.yaml`` (every ``vlr.train``
run directory; a Hydra multirun folder holds many). From W&B, runs are read through the
public API (online only): their config and summary metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

CROSS = ["i2t/R@1", "t2i/R@1", "rsum"]
SINGLE = ["i2i/R@1", "t2t/R@1", "i2i/NDCG@10", "t2t/NDCG@10", "ndcg_single@10", "rsum_single"]
NDCG_SINGLE = "ndcg_single@10"  # i2i + t2t NDCG@10 (ROUGE-L relevance): the papers' single-modal protocol
OVERLAP = ["image/overlap@10", "text/overlap@10"]
BASELINES = ("infonce", "triplet")
STRUCTURE = ("covlr", "sad")


def cell_from_run_dir(run_dir: Path) -> dict:
    """One cell from a run directory: what was run (objective, imbalance, seed, command) and its test metrics."""
    import yaml

    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else []
    return {
        "objective": cfg["objective"]["name"],
        "imbalance": cfg["imbalance"]["name"],
        "strength": float(cfg["imbalance"]["strength"]),
        "seed": int(cfg["seed"]),
        "command": " ".join(["python -m vlr.train", *overrides]),
        "metrics": {
            k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k.startswith("test/")
        },
    }


def cells_from_dirs(paths: list[Path]) -> list[dict]:
    runs = sorted(
        {p.parent for root in paths for p in Path(root).rglob("metrics.json") if (p.parent / ".hydra").is_dir()}
    )
    if not runs:
        raise SystemExit(f"no run directories (metrics.json + .hydra/) under {', '.join(map(str, paths))}")
    return [cell_from_run_dir(r) for r in runs]


def cells_from_wandb(project: str, entity: str | None = None) -> list[dict]:
    import wandb

    api = wandb.Api()
    cells = []
    for run in api.runs(f"{entity}/{project}" if entity else project):
        cfg, summary = run.config, dict(run.summary)
        metrics = {k: float(v) for k, v in summary.items() if k.startswith("test/") and isinstance(v, (int, float))}
        if not metrics or "objective" not in cfg:
            continue
        cells.append(
            {
                "objective": cfg["objective"]["name"],
                "imbalance": cfg.get("imbalance", {}).get("name", "none"),
                "strength": float(cfg.get("imbalance", {}).get("strength", 0.0)),
                "seed": int(cfg.get("seed", 0)),
                "command": f"wandb run {run.path}",
                "metrics": metrics,
            }
        )
    return cells


def mean_std(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def summarize(cells: list[dict]) -> dict[tuple[str, str, float], dict[str, tuple[float, float, int]]]:
    """(objective, imbalance, strength) -> metric -> (mean, std, n) over seeds."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for c in cells:
        metrics = {k.removeprefix("test/"): float(v) for k, v in c["metrics"].items()}
        if "i2i/NDCG@10" in metrics and "t2t/NDCG@10" in metrics:
            metrics[NDCG_SINGLE] = metrics["i2i/NDCG@10"] + metrics["t2t/NDCG@10"]
        for k, v in metrics.items():
            groups[(c["objective"], c["imbalance"], c["strength"])][k].append(v)
    return {key: {m: mean_std(v) for m, v in metrics.items()} for key, metrics in groups.items()}


def _order(objective: str) -> tuple[int, str]:
    known = [*BASELINES, *STRUCTURE]
    return (known.index(objective) if objective in known else len(known), objective)


def table(summary, metrics: list[str]) -> str:
    keys = sorted(summary, key=lambda k: (k[1], k[2], _order(k[0])))
    head = "| imbalance | strength | objective | n | " + " | ".join(metrics) + " |"
    rule = "|" + "---|" * (4 + len(metrics))
    rows = []
    for key in keys:
        stats = summary[key]
        n = max((s[2] for s in stats.values()), default=0)
        cells = [f"{stats[m][0]:.2f} ± {stats[m][1]:.2f}" if m in stats else "–" for m in metrics]
        rows.append(f"| {key[1]} | {key[2]:g} | {key[0]} | {n} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def difference(summary, a: tuple, b: tuple, metric: str) -> tuple[float, float] | None:
    """Mean of a minus mean of b, and the standard error of that difference (Welch)."""
    if a not in summary or b not in summary or metric not in summary[a] or metric not in summary[b]:
        return None
    (ma, sa, na), (mb, sb, nb) = summary[a][metric], summary[b][metric]
    return ma - mb, math.sqrt(sa**2 / na + sb**2 / nb)


def verdict(summary) -> str:
    """Per level: does each structure-preserving objective beat the InfoNCE baseline on single-modal
    retrieval (by more than 2 standard errors of the difference) without losing cross-modal rsum
    (by more than 2)? Single-modal = the papers' protocol (i2i + t2t NDCG@10) where logged, else
    rsum_single; the other single-modal measure is printed beside it."""
    lines = []
    levels = sorted({(k[1], k[2]) for k in summary})
    for imbalance, strength in levels:
        base = ("infonce", imbalance, strength)
        for obj in STRUCTURE:
            key = (obj, imbalance, strength)
            primary = NDCG_SINGLE if difference(summary, key, base, NDCG_SINGLE) else "rsum_single"
            single, cross = difference(summary, key, base, primary), difference(summary, key, base, "rsum")
            if single is None or cross is None:
                continue
            raises = single[0] > 2 * single[1]
            costs = cross[0] < -2 * cross[1]
            answer = (
                "yes"
                if raises and not costs
                else ("no: it costs cross-modal retrieval" if raises else "no: single-modal retrieval does not rise")
            )
            other = difference(summary, key, base, "rsum_single") if primary == NDCG_SINGLE else None
            aside = f"; rsum_single {other[0]:+.2f} (± {other[1]:.2f})" if other else ""
            lines.append(
                f"- {imbalance} {strength:g}, {obj} vs infonce: {primary} {single[0]:+.2f} (± {single[1]:.2f} s.e.), "
                f"rsum {cross[0]:+.2f} (± {cross[1]:.2f}) → **{answer}**{aside}"
            )
    return "\n".join(lines)


def tradeoff_plot(summary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    objectives = sorted({k[0] for k in summary}, key=_order)
    levels = sorted({(k[1], k[2]) for k in summary})
    markers = "os^Dv<>p"
    for i, obj in enumerate(objectives):
        xs, ys, xe, ye = [], [], [], []
        for level in levels:
            stats = summary.get((obj, *level))
            if stats and "rsum" in stats and "rsum_single" in stats:
                xs.append(stats["rsum"][0]), xe.append(stats["rsum"][1])
                ys.append(stats["rsum_single"][0]), ye.append(stats["rsum_single"][1])
        line = ax.errorbar(xs, ys, xerr=xe, yerr=ye, marker=markers[i % len(markers)], capsize=3, label=obj)
        for x, y, level in zip(xs, ys, levels, strict=False):
            ax.annotate(
                f"{level[1]:g}",
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize=8,
                color=line[0].get_color(),
            )
    imbalances = sorted({lvl[0] for lvl in levels})
    ax.set_xlabel("cross-modal rsum (i2t + t2i R@1,5,10)")
    ax.set_ylabel("single-modal rsum (i2i + t2t R@1,5,10)")
    ax.set_title(f"Trade-off per objective; labels = {'/'.join(imbalances)} strength; bars = std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(cells: list[dict], title: str, notes: str = "") -> str:
    summary = summarize(cells)
    seeds = sorted({c["seed"] for c in cells})
    parts = [
        f"# {title}",
        f"{len(cells)} runs; seeds {seeds}; mean ± std over seeds of the test split.",
        "## Cross-modal retrieval",
        table(summary, CROSS),
        "## Single-modal retrieval",
        table(summary, SINGLE),
        "## Structure preservation (overlap@10 with the reference neighbourhoods)",
        table(summary, OVERLAP),
        "## Does structure preservation raise single-modal retrieval without costing cross-modal retrieval?",
        verdict(summary) or "(needs infonce and covlr/sad runs at the same level)",
    ]
    if notes:
        parts += [notes.strip()]
    return "\n\n".join(parts) + "\n"


def write_outputs(cells: list[dict], out: Path, title: str, notes: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"cells": cells}, indent=1))
    (out / "report.md").write_text(report(cells, title, notes))
    tradeoff_plot(summarize(cells), out / "tradeoff.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories or folders that contain them")
    parser.add_argument("--wandb-project")
    parser.add_argument("--wandb-entity")
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    parser.add_argument("--title", default="Objective comparison")
    parser.add_argument(
        "--paired",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="paired bootstrap CIs of A - B from the two runs' rankings.safetensors (save_rankings=true)",
    )
    args = parser.parse_args(argv)
    if args.paired:
        from experiments.paired import paired_table

        print(paired_table(*args.paired))
        return
    if bool(args.runs) == bool(args.wandb_project):
        parser.error("give run directories or --wandb-project (one of them)")
    cells = cells_from_dirs(args.runs) if args.runs else cells_from_wandb(args.wandb_project, args.wandb_entity)
    write_outputs(cells, args.out, args.title)
    print(f"{len(cells)} runs -> {args.out}/report.md, tradeoff.png, results.json")


if __name__ == "__main__":
    main()
