"""The modal-imbalance study (``make study``): objectives x imbalance strengths x seeds on synthetic data.

Each cell is one ``vlr.train`` run with ``experiment=imbalance_study`` (see that preset for
sizes); cells run two at a time, single-threaded, and a cell whose ``metrics.json`` exists
is not run again, so an interrupted study continues where it stopped. Writes
``experiments/imbalance/{results.json, report.md, tradeoff.png}``, and logs the figure and the
results table to an offline W&B run (``runs/wandb``); each cell's ``command`` re-runs it
exactly (from the repository root).

    python -m experiments.imbalance.study [--jobs 2] [--seeds 0 1 2] [--strengths 0 0.5 1] [--imbalance text_weak]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from experiments.compare import cell_from_run_dir, log_to_wandb, write_outputs

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "experiments" / "imbalance"
OBJECTIVES = ("infonce", "triplet", "covlr", "sad")
NOTES = OUT / "notes.md"  # hand-written analysis, appended to the generated report


def cell_overrides(objective: str, imbalance: str, strength: float, seed: int) -> list[str]:
    run_dir = f"experiments/imbalance/runs/{objective}-{imbalance}-{strength:g}-s{seed}"
    return [
        "experiment=imbalance_study",
        f"objective={objective}",
        f"imbalance={imbalance}",
        f"imbalance.strength={strength:g}",
        f"seed={seed}",
        f"hydra.run.dir={run_dir}",
    ]


def run_cell(overrides: list[str]) -> dict:
    run_dir = REPO / overrides[-1].split("=", 1)[1]
    command = "python -m vlr.train " + " ".join(shlex.quote(o) for o in overrides)
    if not (run_dir / "metrics.json").exists():
        start = time.time()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "VLR_ROOT": str(REPO)}
        proc = subprocess.run(
            [sys.executable, "-m", "vlr.train", *overrides], cwd=REPO, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"cell failed: {command}\n{proc.stderr[-3000:]}")
        print(f"  {time.time() - start:6.1f} s  {command}", flush=True)
    cell = cell_from_run_dir(run_dir)
    cell["command"] = command
    return cell


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES))
    parser.add_argument("--imbalance", default="text_weak")
    parser.add_argument("--strengths", nargs="+", type=float, default=[0.0, 0.5, 1.0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--wandb", default="vlr", metavar="PROJECT", help="offline W&B project for the figure and table ('' = none)"
    )
    args = parser.parse_args(argv)

    grid = [
        cell_overrides(o, args.imbalance, s, seed)
        for seed in args.seeds
        for s in args.strengths
        for o in args.objectives
    ]
    print(f"{len(grid)} cells, {args.jobs} at a time")
    start = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        cells = list(pool.map(run_cell, grid))
    notes = NOTES.read_text() if NOTES.exists() else ""
    title = f"Modal-imbalance study: {args.imbalance} on the synthetic benchmark"
    write_outputs(cells, args.out, title, notes)
    print(f"{len(cells)} cells in {time.time() - start:.0f} s -> {args.out}/results.json, report.md, tradeoff.png")
    if args.wandb:  # under runs/ (not committed), beside the cells' own runs
        folder = log_to_wandb(cells, args.out / "runs", title, args.wandb)
        print(f"trade-off figure and results table logged to W&B (offline): {folder}")


if __name__ == "__main__":
    main()
