"""Compare runs: mean ± std tables per objective and imbalance level, a trade-off plot, and the verdict.

    python -m experiments.compare multirun/2026-11-23/10-00-00 [more run dirs ...] --out report/
    python -m experiments.compare --wandb-offline multirun/2026-11-23 --out report/
    python -m experiments.compare --wandb-project vlr [--wandb-entity me] --out report/
    python -m experiments.compare multirun/... --out report/ --log-wandb vlr   # figure + table as W&B media

A run is a directory with ``metrics.json`` and ``.hydra/config.yaml`` (every ``vlr.train``
run directory; a Hydra multirun folder holds many). ``--wandb-offline`` reads the offline
W&B run files under the given folders (`vlr.tracking.wandb_files`), ``--wandb-project`` an online
project through the public API: their config and summary test metrics.

Runs are pooled over seeds only. Runs that differ in anything else than the objective, the
imbalance and its strength (another dataset, model, learning rate, or another ``alpha`` for
the same objective) are never pooled: the comparison stops and names the keys that differ,
so they are compared separately, or pooled on purpose with ``--ignore KEY``.

The verdict pairs runs by seed and uses per-query rankings (``rankings.safetensors``) for 95%
bootstrap intervals over seeds and test images when every run has them; see `verdict`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path

from experiments.paired import MARGIN, status
from vlr.sweeps.summary import SINGLE_MODAL_NDCG, single_modal_ndcg

CROSS = ["i2t/R@1", "t2i/R@1", "rsum"]
SINGLE = ["i2i/R@1", "t2t/R@1", "i2i/NDCG@10", "t2t/NDCG@10", "ndcg_single@10", "rsum_single"]
NDCG_SINGLE = SINGLE_MODAL_NDCG  # i2i + t2t NDCG@10 (ROUGE-L relevance): the papers' single-modal protocol
OVERLAP = ["image/overlap@10", "text/overlap@10"]
BASELINES = ("infonce", "triplet")
STRUCTURE = ("relation_kd", "covlr", "sad")  # relation_kd: CoVLR's relation loss without the meta step


# config keys that do not change what a run measures (where it ran, how it logged)
NEVER_COMPARED = (
    "seed",
    "paths.",
    "hydra.",
    "logger.",
    "callbacks.",
    "task_name",
    "ckpt_path",
    "resume",
    "test",
    "save_rankings",
    "rankings_topk",
    "num_threads",
    "optimized_metric",
    "data.num_workers",
    "data.root",
    "data.cache_dir",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.accelerator",
    "trainer.enable_progress_bar",
    "trainer.default_root_dir",
    "experiment",
    "debug",
    "hparams_search",
    "_wandb",
    "imbalance.seed",  # the imbalance's own seed follows the run's seed (vlr/conf/imbalance/*.yaml: ${seed})
    "params/",  # parameter counts (vlr.callbacks.ParameterCounts): they follow from the config
    "variant",  # the W&B name's variant label (vlr.runs): the overrides it stands for are compared
)
FACTORS = ("objective", "imbalance")  # compared factors: their options are compared among runs of one choice


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
    return out


def differing_keys(cells: list[dict], ignore: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Config keys whose values differ between runs that would be pooled or compared: any key
    outside the factors across all runs, and a factor's options (``objective.alpha``) across
    runs of the same choice (``objective.name``). Key -> the values seen."""
    skip = NEVER_COMPARED + tuple(ignore)

    def compared(key: str) -> bool:
        return not any(key == s or key.startswith(s if s.endswith((".", "/")) else (f"{s}.", f"{s}/")) for s in skip)

    out: dict[str, set] = defaultdict(set)

    def scan(members: list[dict], keys: list[str]) -> None:
        for key in keys:
            values = {repr(m.get("config", {}).get(key, "<absent>")) for m in members}
            if len(values) > 1:
                out[key] |= values

    all_keys = sorted({k for c in cells for k in c.get("config", {}) if compared(k)})
    scan(cells, [k for k in all_keys if k.split(".")[0] not in FACTORS])
    for factor in FACTORS:
        by_choice: dict = defaultdict(list)
        for c in cells:
            by_choice[c.get("config", {}).get(f"{factor}.name")].append(c)
        options = [
            k for k in all_keys if k.split(".")[0] == factor and k not in (f"{factor}.name", f"{factor}.strength")
        ]
        for members in by_choice.values():
            scan(members, options)
    return {k: sorted(v) for k, v in sorted(out.items())}


def check_comparable(cells: list[dict], ignore: tuple[str, ...] = ()) -> None:
    differ = differing_keys(cells, ignore)
    if differ:
        listed = "; ".join(f"{k}: {', '.join(v)}" for k, v in differ.items())
        raise SystemExit(
            f"these runs differ in more than objective, imbalance and seed ({listed}); compare them separately, "
            f"or pool them on purpose with --ignore {' --ignore '.join(differ)}"
        )


def cell_from_run_dir(run_dir: Path) -> dict:
    """One cell from a run directory: what was run (objective, imbalance, seed, command) and its test
    metrics. A ``vlr.eval`` directory is read through the configuration it evaluated
    (``evaluated_config.yaml``: the training run's groups), not its own composition."""
    import yaml

    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    entry = "python -m vlr.train"
    if cfg.get("task_name") == "eval":
        evaluated = run_dir / "evaluated_config.yaml"
        if not evaluated.is_file():
            raise SystemExit(f"{run_dir}: a vlr.eval run without evaluated_config.yaml (an older vlr); re-run its eval")
        cfg, entry = yaml.safe_load(evaluated.read_text()), "python -m vlr.eval"
    overrides_path = run_dir / ".hydra" / "overrides.yaml"
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else []
    return {
        "objective": cfg["objective"]["name"],
        "imbalance": cfg["imbalance"]["name"],
        "strength": float(cfg["imbalance"]["strength"]),
        "seed": int(cfg["seed"]),
        "command": " ".join([entry, *overrides]),
        "config": flatten(cfg),
        "metrics": {
            k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k.startswith("test/")
        },
        **({"rankings": str(run_dir / "rankings.safetensors")} if (run_dir / "rankings.safetensors").is_file() else {}),
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
        cell = _cell_from_config(dict(run.config), dict(run.summary), f"wandb run {run.path}")
        if cell is not None:
            cells.append(cell)
    return cells


def _cell_from_config(cfg: dict, summary: dict, command: str) -> dict | None:
    metrics = {
        k: float(v)
        for k, v in summary.items()
        if k.startswith("test/") and k != "test/step" and isinstance(v, (int, float))  # test/step: W&B's test axis
    }
    if not metrics or "objective" not in cfg:
        return None
    return {
        "objective": cfg["objective"]["name"],
        "imbalance": cfg.get("imbalance", {}).get("name", "none"),
        "strength": float(cfg.get("imbalance", {}).get("strength", 0.0)),
        "seed": int(cfg.get("seed", 0)),
        "command": command,
        "config": flatten(cfg),
        "metrics": metrics,
    }


def cells_from_wandb_offline(paths: list[Path]) -> list[dict]:
    """Cells from offline W&B run files (``wandb/offline-run-*/run-*.wandb``) under ``paths``."""
    from vlr.tracking.wandb_files import read_run

    files = sorted({f for root in paths for f in Path(root).rglob("run-*.wandb")})
    # a resumed run writes a second offline folder under the same run id: the newest holds the final test
    newest: dict[str, Path] = {}
    for f in sorted(files, key=lambda f: f.parent.name):  # offline-run-<date>_<time>-<id>: by time
        newest[f.stem.removeprefix("run-")] = f
    cells = []
    for f in sorted(newest.values()):
        run = read_run(f)
        cell = _cell_from_config(run.config, run.summary, f"wandb offline run {f.parent.name}")
        if cell is not None:
            cells.append(cell)
    if not cells:
        raise SystemExit(f"no offline W&B runs with test metrics under {', '.join(map(str, paths))}")
    return cells


def mean_std(values: list[float]) -> tuple[float, float, int]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def summarize(cells: list[dict]) -> dict[tuple[str, str, float], dict[str, tuple[float, float, int]]]:
    """(objective, imbalance, strength) -> metric -> (mean, std, n) over seeds."""
    groups: dict = defaultdict(lambda: defaultdict(list))
    for c in cells:
        metrics = {k.removeprefix("test/"): float(v) for k, v in c["metrics"].items()}
        ndcg = single_modal_ndcg(metrics)
        if ndcg is not None:
            metrics[NDCG_SINGLE] = ndcg
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


def verdict(summary, cells: list[dict] | None = None, margin: float = MARGIN) -> str:
    """Per level: does each structure-preserving objective beat the InfoNCE baseline on single-modal
    retrieval without losing cross-modal rsum? Single-modal = the papers' protocol (i2i + t2t
    NDCG@10) where logged, else rsum_single.

    With per-query rankings for every paired run (``save_rankings=true``), the differences are
    paired by seed with 95% two-stage bootstrap intervals (seeds, then test images:
    `experiments.paired.seeds_and_queries_difference`): a rise is resolved when the interval lies
    above 0, and "no cross-modal cost" needs the whole rsum interval inside ±``margin``.
    Without rankings, the seed means' difference ± 2 standard errors stands in for the interval,
    under the same rule (`experiments.paired.status`), and each line says so."""
    lines = []
    levels = sorted({(k[1], k[2]) for k in summary}, key=lambda lvl: (lvl[0] != "none", lvl))  # balanced first
    for imbalance, strength in levels:
        base = ("infonce", imbalance, strength)
        for obj in STRUCTURE:
            key = (obj, imbalance, strength)
            primary = NDCG_SINGLE if difference(summary, key, base, NDCG_SINGLE) else "rsum_single"
            pairs = _paired_rankings(cells or [], key, base)
            if pairs:
                lines.append(_paired_line(pairs, key, primary, margin))
                continue
            single, cross = difference(summary, key, base, primary), difference(summary, key, base, "rsum")
            if single is None or cross is None:
                continue
            seeds = min(summary[key][primary][2], summary[base][primary][2])
            verdict_ = status(_welch_interval(single, seeds), _welch_interval(cross, seeds), margin)
            other = difference(summary, key, base, "rsum_single") if primary == NDCG_SINGLE else None
            aside = f"; rsum_single {other[0]:+.2f} (± {other[1]:.2f})" if other else ""
            lines.append(
                f"- {imbalance} {strength:g}, {obj} vs infonce: {primary} {single[0]:+.2f} (± {single[1]:.2f} s.e.), "
                f"rsum {cross[0]:+.2f} (± {cross[1]:.2f}) → **{_answer(verdict_, margin, seeds)}** "
                f"(mean ± 2 s.e.: no per-query rankings){aside}"
            )
    return "\n".join(lines)


def _welch_interval(diff: tuple[float, float], seeds: int) -> dict:
    return {"difference": diff[0], "low": diff[0] - 2 * diff[1], "high": diff[0] + 2 * diff[1], "seeds": seeds}


def _answer(verdict_: dict, margin: float, seeds: int) -> str:
    """The verdict (`experiments.paired.status`) in words."""
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
    return f"not resolved: single-modal rises, but a cross-modal cost beyond ±{margin:g} is not excluded"


def _paired_rankings(cells: list[dict], key: tuple, base: tuple) -> list[tuple[dict, dict]]:
    """The rankings of ``key``'s and ``base``'s runs paired by seed; [] unless every run of both
    has rankings and they share at least one seed."""
    from experiments.paired import load_rankings

    def by_seed(k: tuple) -> dict[int, dict]:
        return {c["seed"]: c for c in cells if (c["objective"], c["imbalance"], c["strength"]) == k}

    a, b = by_seed(key), by_seed(base)
    seeds = sorted(set(a) & set(b))
    if not seeds or not all("rankings" in c for c in (*a.values(), *b.values())):
        return []
    return [(load_rankings(Path(a[s]["rankings"])), load_rankings(Path(b[s]["rankings"]))) for s in seeds]


def _paired_line(pairs: list[tuple[dict, dict]], key: tuple, primary: str, margin: float) -> str:
    from experiments.paired import seeds_and_queries_difference

    single = seeds_and_queries_difference(pairs, primary)
    cross = seeds_and_queries_difference(pairs, "rsum")
    answer = _answer(status(single, cross, margin), margin, single["seeds"])

    def fmt(d: dict) -> str:
        return f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]"

    return (
        f"- {key[1]} {key[2]:g}, {key[0]} vs infonce ({single['seeds']} paired seeds): {primary} {fmt(single)}, "
        f"rsum {fmt(cross)} → **{answer}** (95% bootstrap over seeds and test images)"
    )


def tradeoff_plot(summary, path: Path) -> None:
    """Cross-modal rsum against the verdict's single-modal measure (i2i + t2t NDCG@10 where logged,
    else rsum_single): one line per objective and imbalance, each point labelled with its level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = NDCG_SINGLE if all(NDCG_SINGLE in stats for stats in summary.values()) else "rsum_single"
    fig, ax = plt.subplots(figsize=(8, 5.5))
    objectives = sorted({k[0] for k in summary}, key=_order)
    imbalances = sorted({k[1] for k in summary})
    if "none" in imbalances and len(imbalances) > 1:  # the balanced data starts every imbalance's line
        summary = dict(summary)
        for (obj, imbalance, strength), stats in list(summary.items()):
            if imbalance == "none":
                del summary[(obj, imbalance, strength)]
                for other in imbalances:
                    if other != "none":
                        summary.setdefault((obj, other, 0.0), stats)
        imbalances.remove("none")
    markers, styles = "os^Dv<>p", ["-", "--", ":", "-."]
    for i, obj in enumerate(objectives):
        for j, imbalance in enumerate(imbalances):
            levels = sorted(k[2] for k in summary if k[0] == obj and k[1] == imbalance)
            xs, ys, xe, ye, shown = [], [], [], [], []
            for strength in levels:
                stats = summary[(obj, imbalance, strength)]
                if "rsum" in stats and single in stats:
                    xs.append(stats["rsum"][0]), xe.append(stats["rsum"][1])
                    ys.append(stats[single][0]), ye.append(stats[single][1])
                    shown.append(strength)  # the label goes with its own point, whatever levels are missing
            if not xs:
                continue
            label = obj if len(imbalances) == 1 else f"{obj}, {imbalance}"
            line = ax.errorbar(
                xs,
                ys,
                xerr=xe,
                yerr=ye,
                marker=markers[i % len(markers)],
                capsize=3,
                label=label,
                color=f"C{i % 10}",
                linestyle=styles[j % len(styles)],
            )
            for x, y, strength in zip(xs, ys, shown, strict=True):
                text = f"{strength:g}" if len(imbalances) == 1 else f"{imbalance} {strength:g}"
                ax.annotate(
                    text, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=line[0].get_color()
                )
    ax.set_xlabel("cross-modal rsum (i2t + t2i R@1,5,10)  →  better")
    what = "i2i + t2t NDCG@10" if single == NDCG_SINGLE else "rsum_single: i2i + t2t R@1,5,10"
    ax.set_ylabel(f"single-modal {what}  →  better")
    ax.set_title("Trade-off per objective (point labels: imbalance strength; bars: std over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
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
        verdict(summary, cells) or "(needs infonce and relation_kd/covlr/sad runs at the same level)",
    ]
    if notes:
        parts += [notes.strip()]
    return "\n\n".join(parts) + "\n"


def write_outputs(cells: list[dict], out: Path, title: str, notes: str = "") -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"cells": cells}, indent=1))
    (out / "report.md").write_text(report(cells, title, notes))
    tradeoff_plot(summarize(cells), out / "tradeoff.png")


def results_table(cells: list[dict]) -> tuple[list[str], list[list[object]]]:
    """The report's numbers as one table (a row per objective x imbalance x strength): mean and
    std over seeds of every cross-modal, single-modal and overlap metric."""
    summary = summarize(cells)
    metrics = [*CROSS, *SINGLE, *OVERLAP]
    columns = ["imbalance", "strength", "objective", "n"]
    columns += [f"{m} {stat}" for m in metrics for stat in ("mean", "std")]
    rows = []
    for key in sorted(summary, key=lambda k: (k[1], k[2], _order(k[0]))):
        stats = summary[key]
        n = max((s[2] for s in stats.values()), default=0)
        values = [stats[m][i] if m in stats else None for m in metrics for i in (0, 1)]
        rows.append([key[1], key[2], key[0], n, *values])
    return columns, rows


def log_to_wandb(cells: list[dict], out: Path, title: str, project: str = "vlr", offline: bool = True) -> Path:
    """The trade-off figure and the results table of a comparison as W&B media (a ``compare`` run)."""
    from vlr.tracking.wandb_report import log_summary_run

    return log_summary_run(
        project=project,
        name=title,
        save_dir=out,
        images={"tradeoff": out / "tradeoff.png"},
        tables={"results": results_table(cells)},
        offline=offline,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path, help="run directories or folders that contain them")
    parser.add_argument("--wandb-offline", nargs="+", type=Path, help="folders holding offline W&B run files")
    parser.add_argument("--wandb-project")
    parser.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="pool runs that differ in this config key (or key prefix), e.g. --ignore trainer.precision",
    )
    parser.add_argument("--wandb-entity")
    parser.add_argument("--out", type=Path, default=Path("comparison"))
    parser.add_argument("--title", default="Objective comparison")
    parser.add_argument(
        "--log-wandb",
        metavar="PROJECT",
        help="also log the trade-off figure and the results table to W&B (offline unless --online)",
    )
    parser.add_argument("--online", action="store_true", help="with --log-wandb: log to the W&B server")
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
    if sum(map(bool, (args.runs, args.wandb_offline, args.wandb_project))) != 1:
        parser.error("give run directories, --wandb-offline folders or --wandb-project (one of them)")
    if args.runs:
        cells = cells_from_dirs(args.runs)
    elif args.wandb_offline:
        cells = cells_from_wandb_offline(args.wandb_offline)
    else:
        cells = cells_from_wandb(args.wandb_project, args.wandb_entity)
    check_comparable(cells, tuple(args.ignore))
    write_outputs(cells, args.out, args.title)
    print(f"{len(cells)} runs -> {args.out}/report.md, tradeoff.png, results.json")
    if args.log_wandb:
        folder = log_to_wandb(cells, args.out, args.title, args.log_wandb, offline=not args.online)
        print(f"trade-off figure and results table logged to W&B: {folder}")


if __name__ == "__main__":
    main()
