"""Runs -> cells: what was run (objective, imbalance, strength, seed, command, flat config) and its
test metrics, from run directories, offline W&B run files or a W&B project.

A run directory holds ``metrics.json`` and ``.hydra/config.yaml`` (every ``vlr.train`` run
directory; a Hydra multirun folder holds many). Offline run files are read with
`vlr.tracking.wandb_files` (no server); a project through W&B's public API.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlr.sweeps.summary import job_overrides


def flatten(config: dict, prefix: str = "") -> dict[str, object]:
    """Nested config -> ``{"objective.alpha": 0.01, ...}``; lists as JSON, so values compare."""
    out: dict[str, object] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
    return out


def cell_from_run_dir(run_dir: Path) -> dict:
    """One cell from a run directory. A ``vlr.eval`` directory is read through the configuration
    it evaluated (``evaluated_config.yaml``: the training run's groups), not its own composition."""
    import yaml

    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    entry = "python -m vlr.train"
    if cfg.get("task_name") == "eval":
        evaluated = run_dir / "evaluated_config.yaml"
        if not evaluated.is_file():
            raise SystemExit(f"{run_dir}: a vlr.eval run without evaluated_config.yaml (an older vlr); re-run its eval")
        cfg, entry = yaml.safe_load(evaluated.read_text()), "python -m vlr.eval"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    rankings = run_dir / "rankings.safetensors"
    return {
        "objective": cfg["objective"]["name"],
        "imbalance": cfg["imbalance"]["name"],
        "strength": float(cfg["imbalance"]["strength"]),
        "seed": int(cfg["seed"]),
        "command": " ".join([entry, *job_overrides(run_dir)]),
        "config": flatten(cfg),
        "metrics": {k: v for k, v in metrics.items() if k.startswith("test/")},
        **({"rankings": str(rankings)} if rankings.is_file() else {}),
    }


def cells_from_dirs(paths: list[Path]) -> list[dict]:
    runs = sorted(
        {p.parent for root in paths for p in Path(root).rglob("metrics.json") if (p.parent / ".hydra").is_dir()}
    )
    if not runs:
        raise SystemExit(f"no run directories (metrics.json + .hydra/) under {', '.join(map(str, paths))}")
    return [cell_from_run_dir(r) for r in runs]


def cell_from_config(cfg: dict, summary: dict, command: str) -> dict | None:
    """A cell from a W&B run's config and summary; None for a run without test metrics or objective
    (a ``compare`` run, say)."""
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


def cells_from_wandb(project: str, entity: str | None = None) -> list[dict]:
    import wandb

    runs = wandb.Api().runs(f"{entity}/{project}" if entity else project)
    cells = [cell_from_config(dict(r.config), dict(r.summary), f"wandb run {r.path}") for r in runs]
    return [c for c in cells if c is not None]


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
        cell = cell_from_config(run.config, run.summary, f"wandb offline run {f.parent.name}")
        if cell is not None:
            cells.append(cell)
    if not cells:
        raise SystemExit(f"no offline W&B runs with test metrics under {', '.join(map(str, paths))}")
    return cells
