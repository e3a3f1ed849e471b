"""Compare runs: mean ± std tables per objective and imbalance level, a trade-off figure, and the verdict.

    python -m experiments.compare multirun/train/<date>/<time> [more run dirs ...] --out report/
    python -m experiments.compare --wandb-offline multirun/train/<date>/<time> --out report/
    python -m experiments.compare --wandb-project vlr [--wandb-entity me] --out report/
    python -m experiments.compare multirun/... --out report/ --log-wandb vlr   # figure + table as W&B media

One job per module, in the order a comparison runs:

- `collect`: runs -> cells (run directories, offline W&B run files, a W&B project);
- `comparable`: which runs may be pooled (seeds only, unless ``--ignore KEY``);
- `pooled`: mean ± std over seeds per (objective, imbalance, strength), and their differences;
- `verdict`: does structure preservation raise single-modal retrieval at no cross-modal cost
  (paired bootstrap from `experiments.paired` where every run has rankings);
- `tables`, `figures`: report.md's tables and tradeoff.png (drawn by `vlr.sweeps.summary`);
- `outputs`: the files a comparison writes, and its W&B media; `cli`: the command.
"""

from experiments.compare.cli import main
from experiments.compare.collect import cell_from_run_dir, cells_from_dirs, cells_from_wandb, cells_from_wandb_offline
from experiments.compare.comparable import check_comparable, differing_keys
from experiments.compare.outputs import log_to_wandb, write_outputs
from experiments.compare.pooled import difference, summarize
from experiments.compare.tables import report, results_table
from experiments.compare.verdict import verdict

__all__ = [
    "cell_from_run_dir",
    "cells_from_dirs",
    "cells_from_wandb",
    "cells_from_wandb_offline",
    "check_comparable",
    "difference",
    "differing_keys",
    "log_to_wandb",
    "main",
    "report",
    "results_table",
    "summarize",
    "verdict",
    "write_outputs",
]
