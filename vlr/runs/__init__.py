"""A run folder: resume, the W&B run id, run names and variants, multirun + DDP, the sweep value,
and reading the checkpoints a user points at."""

from vlr.runs.checkpoints import CheckpointError, check_state_fits, read_checkpoint
from vlr.runs.run_dir import (
    FACTORS,
    PLUMBING,
    RUN_TOKENIZER_DIR,
    WANDB_ID_FILE,
    best_epoch_metrics,
    is_plumbing,
    label_runs,
    pin_wandb_run,
    release_distributed,
    resume_checkpoint,
    run_variant,
    share_run_dir_with_ddp_children,
    sweep_value,
)

__all__ = [
    "FACTORS",
    "PLUMBING",
    "RUN_TOKENIZER_DIR",
    "WANDB_ID_FILE",
    "CheckpointError",
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
