"""A run folder's bookkeeping, one job per module: `Run` (what `vlr.train` asks of it, in order),
resume and the W&B run id (`resume`), run names and variants (`naming`), multirun + DDP
(`multirun`), the best epoch and the sweep value (`results`), stop signals (`stopping`), and
checkpoints: the version stamp and reading those a user points at (`checkpoints`)."""

from vlr.runs.checkpoints import CHECKPOINT_FORMAT, CheckpointError, check_state_fits, read_checkpoint
from vlr.runs.multirun import release_distributed, share_run_dir_with_ddp_children
from vlr.runs.naming import FACTORS, PLUMBING, is_plumbing, label_runs, run_variant
from vlr.runs.results import best_epoch_metrics, sweep_value
from vlr.runs.resume import WANDB_ID_FILE, pin_wandb_run, resume_checkpoint
from vlr.runs.run import RUN_TOKENIZER_DIR, Run

__all__ = [
    "CHECKPOINT_FORMAT",
    "FACTORS",
    "PLUMBING",
    "RUN_TOKENIZER_DIR",
    "WANDB_ID_FILE",
    "CheckpointError",
    "Run",
    "best_epoch_metrics",
    "check_state_fits",
    "is_plumbing",
    "label_runs",
    "pin_wandb_run",
    "read_checkpoint",
    "release_distributed",
    "resume_checkpoint",
    "run_variant",
    "share_run_dir_with_ddp_children",
    "sweep_value",
]
