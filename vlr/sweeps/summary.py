"""One sweep at a glance: a row per job (the overrides that differ between jobs, its metrics) and a
trade-off figure. Written by `vlr.sweeps.SummarizeSweep` at the end of every Hydra multirun."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from omegaconf import OmegaConf

# single-modal i2i + t2t NDCG@10 under the run's primary relevance (``rsum_single``: scene on
# synthetic data, rouge_l on real captions); the per-relevance columns say which graded what
SINGLE_MODAL_NDCG = "ndcg_single@10"  # the name callers give that number (= rsum_single)
RELEVANCES = ("scene", "rouge_l", "labels")
NDCG_COLUMNS = tuple(f"{d}/{r}_NDCG@10" for r in RELEVANCES for d in ("i2i", "t2t"))
COLUMNS = ("rsum", "rsum_single", "i2t/R@1", "t2i/R@1", *NDCG_COLUMNS)
# the axes' ends: rsum is six recalls in percent, the single-modal measure two NDCGs in percent
RSUM_MAX, SINGLE_MODAL_MAX = 600.0, 200.0
# what every run is, whatever the sweep varies (read from each job's resolved config)
FACTORS = (
    "data.name",
    "model.preset",
    "objective.name",
    "imbalance.name",
    "imbalance.strength",
    "reference.kind",
    "seed",
    "data.batch_size",
    "trainer.max_epochs",
    "model.optimizer.lr",
)


def single_modal_ndcg(metrics: dict[str, float], prefix: str = "") -> float | None:
    """``{prefix}rsum_single`` (i2i + t2t NDCG@10 under the primary relevance), or None."""
    return metrics.get(f"{prefix}rsum_single")


def job_overrides(job: Path) -> list[str]:
    """The command-line overrides a Hydra job ran with (``.hydra/overrides.yaml``); [] without that file."""
    path = job / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return [str(o) for o in items or []]  # a list: Hydra writes one


def _overrides(job: Path) -> dict[str, str]:
    pairs = (o.partition("=") for o in job_overrides(job))
    return {key: value for key, _, value in pairs}


def _choices(job: Path) -> dict[str, str]:
    """The config groups a job composed (Hydra's ``runtime.choices``), Hydra's own left out."""
    path = job / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = OmegaConf.select(OmegaConf.load(path), "hydra.runtime.choices") or {}
    return {str(k): str(v) for k, v in choices.items() if not str(k).startswith("hydra")}


def _factors(job: Path) -> dict[str, str]:
    path = job / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    config = OmegaConf.load(path)
    values = {key: OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False) for key in FACTORS}
    return {key: str(value) for key, value in values.items() if value is not None}


def held_fixed(jobs: list[Path]) -> dict[str, str]:
    """Every setting all jobs share: the groups they composed (``experiment``, ``imbalance``,
    ``debug`` ...), the overrides they were all given, and the factors of `FACTORS`; a setting
    that differs between jobs is what the sweep varied, and is not here."""
    per_job = [{**_choices(job), **_factors(job), **_overrides(job)} for job in jobs]
    keys = sorted({k for settings in per_job for k in settings})
    return {k: per_job[0][k] for k in keys if all(k in s and s[k] == per_job[0][k] for s in per_job)}


def chance_point(job: Path, stage: str) -> tuple[float, float] | None:
    """(rsum, single-modal) of a constant model on ``stage``, from a job's ``evaluation.json``."""
    path = job / "evaluation.json"
    if not path.is_file():
        return None
    chance = json.loads(path.read_text()).get("chance") or {}
    rsum, single = chance.get(f"{stage}/rsum"), single_modal_ndcg(chance, f"{stage}/")
    return None if rsum is None or single is None else (float(rsum), float(single))


def pooled_over_seeds(
    jobs: list[Path], points: list[tuple[str, str, float, float]]
) -> tuple[list[tuple[str, str, float, float]], list[tuple[float, float]] | None]:
    """Points of jobs that differ only in ``seed`` pooled into one: the mean, with the spread
    (one standard deviation over the seeds, as error bars); the points unchanged (and no bars)
    when the sweep does not vary the seed."""
    overrides = {job.name: _overrides(job) for job in jobs}
    if len({o.get("seed") for o in overrides.values()}) < 2:
        return points, None
    varied = sorted({k for o in overrides.values() for k in o if k != "seed"})
    varied = [k for k in varied if len({o.get(k) for o in overrides.values()}) > 1]
    groups: dict[str, list[tuple[str, str, float, float]]] = {}
    for point in points:
        o = overrides[point[0]]
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(o.get(k, ''))}" for k in varied) or "all jobs"
        groups.setdefault(label, []).append(point)
    pooled, errors = [], []
    for label, members in groups.items():
        xs, ys = [m[2] for m in members], [m[3] for m in members]
        pooled.append((f"{len(members)} seeds", label, statistics.fmean(xs), statistics.fmean(ys)))
        spread = (statistics.stdev(xs), statistics.stdev(ys)) if len(members) > 1 else (0.0, 0.0)
        errors.append(spread)
    return pooled, errors


def write_sweep_figure(
    jobs: list[Path], points: list[tuple[str, str, float, float]], sweep_dir: Path, split: str
) -> tuple[Path | None, Path]:
    """``tradeoff.png`` (seeds pooled with their spread, the chance level, axes from chance to
    the measures' maxima, what was held fixed in the title) and ``sweep.json`` beside
    ``sweep.csv``: what the sweep held fixed and varied, and the chance level."""
    fixed = held_fixed(jobs)
    chance = chance_point(jobs[0], split)
    shown, errors = pooled_over_seeds(jobs, points)
    varied = sorted({k for job in jobs for k in _overrides(job)} - set(fixed))
    sidecar = sweep_dir / "sweep.json"
    info = {"jobs": len(jobs), "split": split, "held_fixed": fixed, "varied": varied}
    info["chance"] = {"rsum": chance[0], SINGLE_MODAL_NDCG: chance[1]} if chance else None
    sidecar.write_text(json.dumps(info, indent=1) + "\n")
    fixed_text = ", ".join(f"{k}={v}" for k, v in fixed.items() if "." not in k or k in FACTORS)
    title = f"{len(jobs)} jobs of {sweep_dir} ({split} split)\nheld fixed: {fixed_text}"
    if errors:
        title += "\nbars: one standard deviation over seeds"
    figure = tradeoff_figure(shown, sweep_dir / "tradeoff.png", title, errors=errors, chance=chance, full_axes=True)
    return figure, sidecar


def _short(value: str) -> str:
    """An override's value for a figure label: floats to 3 significant digits (Optuna's draws),
    paths to their last two parts (an eval sweep's checkpoints)."""
    if "/" in value:
        return "/".join(value.rstrip("/").split("/")[-2:])
    try:
        return f"{float(value):.3g}" if any(c in value for c in ".eE") else value
    except ValueError:
        return value


def sweep_rows(
    jobs: list[Path], prefer: str = "test"
) -> tuple[list[str], list[list[object]], list[tuple[str, str, float, float]]]:
    """Columns, one row per job, and the figure's points (job folder, label, cross-modal rsum,
    single-modal):
    the ``prefer`` split's metrics when every job has them (``val`` for a search: choosing on
    test would be selection on the test split), else val's."""
    overrides = [_overrides(job) for job in jobs]
    keys = sorted({k for o in overrides for k in o})
    varied = [k for k in keys if len({o.get(k) for o in overrides}) > 1]
    metrics = [json.loads((job / "metrics.json").read_text()) for job in jobs]
    stage = prefer if all(f"{prefer}/rsum" in m for m in metrics) else "val"
    shown = [c for c in COLUMNS if c not in NDCG_COLUMNS or any(f"{stage}/{c}" in m for m in metrics)]
    columns = ["job", *varied, "split", *shown]
    rows, points = [], []
    for job, o, m in zip(jobs, overrides, metrics, strict=True):
        values = {c: m.get(f"{stage}/{c}") for c in COLUMNS}
        rows.append([job.name, *[o.get(k, "") for k in varied], stage, *[values[c] for c in shown]])
        label = ", ".join(f"{k.rsplit('.', 1)[-1]}={_short(o.get(k, ''))}" for k in varied) or f"job {job.name}"
        single = single_modal_ndcg(m, f"{stage}/")
        if values["rsum"] is not None and single is not None:
            points.append((job.name, label, float(values["rsum"]), float(single)))
    return columns, rows, points


def tradeoff_figure(
    points: list[tuple[str, str, float, float]],
    path: Path,
    title: str,
    errors: list[tuple[float, float]] | None = None,
    single: str = "rsum_single (i2i + t2t NDCG@10, primary relevance)",
    legend: str = "job",
    chance: tuple[float, float] | None = None,
    full_axes: bool = False,
) -> Path | None:
    """Cross-modal rsum (x) against a single-modal measure (y, named by ``single``); better is up
    and to the right. ``points``: (name, series, rsum, single-modal). The points of one series share
    a colour and a legend entry and are joined in the order given (a sweep: a series per job; a
    comparison pooled over seeds: a series per objective, a point per imbalance strength).
    ``errors``: each point's (x, y) half-widths, drawn as bars; ``legend``: what a series is.
    ``chance``: a constant model's (rsum, single-modal), drawn as dashed lines; ``full_axes``:
    axes from chance (or the lowest point) to the measures' maxima (`RSUM_MAX`,
    `SINGLE_MODAL_MAX`), not to the points: a one-point difference looks like one.
    None when there is no point."""
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[int]] = {}
    for i, (_, label, _, _) in enumerate(points):
        series.setdefault(label, []).append(i)
    many = len(series) > 10  # then named points and the legend beside the axes, not over them
    fig, ax = plt.subplots(figsize=(11, 6) if many else (8, 6))
    colours = plt.get_cmap("tab20" if many else "tab10")
    for c, (label, members) in enumerate(series.items()):
        name = points[members[0]][0]
        line = ax.errorbar(
            [points[i][2] for i in members],
            [points[i][3] for i in members],
            xerr=[errors[i][0] for i in members] if errors else None,
            yerr=[errors[i][1] for i in members] if errors else None,
            color=colours(c % colours.N),
            marker="o",
            markersize=5,
            capsize=3,
            linestyle="-" if len(members) > 1 else "none",
            label=f"{name}: {label}" if many and len(members) == 1 else label,
        )
        if many or len(members) > 1:  # a point's own name (the job's folder, as in sweep.csv; a strength)
            for i in members:
                ax.annotate(
                    points[i][0],
                    (points[i][2], points[i][3]),
                    textcoords="offset points",
                    xytext=(4, 3),
                    fontsize=7,
                    color=line[0].get_color(),
                )
    if chance is not None:
        ax.axvline(chance[0], color="grey", linestyle="--", linewidth=1, label="chance (a constant model)")
        ax.axhline(chance[1], color="grey", linestyle="--", linewidth=1)
    if full_axes:
        lows = [min(p[2] - (errors[i][0] if errors else 0) for i, p in enumerate(points))]
        lows_y = [min(p[3] - (errors[i][1] if errors else 0) for i, p in enumerate(points))]
        if chance is not None:
            lows, lows_y = lows + [chance[0]], lows_y + [chance[1]]
        ax.set_xlim(max(0.0, min(lows) - 0.02 * RSUM_MAX), RSUM_MAX)
        ax.set_ylim(max(0.0, min(lows_y) - 0.02 * SINGLE_MODAL_MAX), SINGLE_MODAL_MAX)
    ax.set_xlabel("cross-modal rsum (i2t + t2i R@1,5,10)  →  better")
    ax.set_ylabel(f"single-modal {single}  →  better")
    ax.set_title(title, fontsize=9, wrap=True)
    if many:
        ax.legend(
            fontsize=6,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            title=legend,
            title_fontsize=7,
            ncol=1 + len(series) // 30,
        )
    else:
        ax.legend(fontsize=7, loc="best", title=legend, title_fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
