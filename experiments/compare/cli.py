"""The command: ``python -m experiments.compare RUNS... --out DIR`` (or ``--wandb-offline``,
``--wandb-project``; ``--paired RUN_A RUN_B`` prints `experiments.paired`'s table instead)."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.compare.collect import cells_from_dirs, cells_from_wandb, cells_from_wandb_offline
from experiments.compare.comparable import check_comparable
from experiments.compare.outputs import log_to_wandb, write_outputs
from experiments.paired import MARGIN


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.compare",
        description="Compare runs: mean ± std tables per objective and imbalance level, a trade-off figure, "
        "and the verdict.",
    )
    p.add_argument("runs", nargs="*", type=Path, help="run directories or folders that contain them")
    p.add_argument("--wandb-offline", nargs="+", type=Path, help="folders holding offline W&B run files")
    p.add_argument("--wandb-project")
    p.add_argument("--wandb-entity")
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="KEY",
        help="pool runs that differ in this config key (or key prefix), e.g. --ignore trainer.precision",
    )
    p.add_argument("--out", type=Path, default=Path("comparison"))
    p.add_argument("--title", default="Objective comparison")
    p.add_argument(
        "--log-wandb",
        metavar="PROJECT",
        help="also log the trade-off figure and the results table to W&B (offline unless --online)",
    )
    p.add_argument("--online", action="store_true", help="with --log-wandb: log to the W&B server")
    p.add_argument(
        "--margin",
        type=float,
        default=MARGIN,
        help=f"rsum points: 'no cross-modal cost' needs the whole rsum interval inside ±MARGIN (default {MARGIN:g}); "
        "an unresolved verdict says the smallest rsum difference its seeds can detect",
    )
    p.add_argument(
        "--paired",
        nargs=2,
        type=Path,
        metavar=("RUN_A", "RUN_B"),
        help="paired bootstrap CIs of A - B from the two runs' rankings.safetensors (save_rankings=true)",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    if not args.margin > 0:
        cli.error(f"--margin must be > 0 rsum points, got {args.margin}")
    if args.paired:
        from experiments.paired import paired_table

        print(paired_table(*args.paired))
        return
    if sum(map(bool, (args.runs, args.wandb_offline, args.wandb_project))) != 1:
        cli.error("give run directories, --wandb-offline folders or --wandb-project (one of them)")
    if args.runs:
        cells = cells_from_dirs(args.runs)
    elif args.wandb_offline:
        cells = cells_from_wandb_offline(args.wandb_offline)
    else:
        cells = cells_from_wandb(args.wandb_project, args.wandb_entity)
    check_comparable(cells, tuple(args.ignore))
    write_outputs(cells, args.out, args.title, margin=args.margin)
    written = [f for f in ("report.md", "tradeoff.png", "results.json") if (args.out / f).is_file()]
    print(f"{len(cells)} runs -> {args.out}/{', '.join(written)}")
    if args.log_wandb:
        folder = log_to_wandb(cells, args.out, args.title, args.log_wandb, offline=not args.online)
        print(f"trade-off figure and results table logged to W&B: {folder}")
