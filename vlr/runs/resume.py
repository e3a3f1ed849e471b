"""A run folder is the unit of work: the same command with the same ``hydra.run.dir`` again resumes
it from ``checkpoints/last.ckpt`` and continues the same W&B run, whose id is kept in
``<run dir>/wandb_run_id``."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from omegaconf import DictConfig, open_dict
from torch import nn

from vlr.runs.checkpoints import check_state_fits, read_checkpoint
from vlr.tracking.loggers import ResumableCSVLogger

log = logging.getLogger(__name__)
WANDB_ID_FILE = "wandb_run_id"


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """``ckpt_path`` when given, else the run directory's ``last.ckpt`` when ``resume`` (default)."""
    if cfg.get("ckpt_path"):
        return str(cfg.ckpt_path)
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("resume", True) and last.is_file():
        log.info("resuming from %s (resume=false starts over)", last)
        return str(last)
    return None


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0


def pin_wandb_run(cfg: DictConfig) -> Path | None:
    """Give the W&B logger this run directory's id, so a resumed run continues the same W&B run.
    A new id is not written here: the file to write it in is returned (rank 0 of a new run), and
    `Run` writes it once the start passed its checks (`write_wandb_id`)."""
    logger = cfg.get("logger")
    if not logger or "wandb" not in logger or not logger.wandb:
        return None
    path = Path(cfg.paths.output_dir) / WANDB_ID_FILE
    # resume=false starts another run (the old one is moved aside with its id): a new W&B id.
    # DDP children always read the file: rank 0 wrote this run's id there before they started.
    if path.exists() and (cfg.get("resume", True) or not _is_rank_zero()):
        run_id, to_write = path.read_text().strip(), None
    else:
        run_id = secrets.token_hex(4)  # W&B's id shape (8 of [a-z0-9]); secrets leaves the seeded RNGs alone
        to_write = path if _is_rank_zero() else None  # DDP children start after rank 0 wrote it, and read it
    with open_dict(cfg):
        cfg.logger.wandb.id = run_id
        cfg.logger.wandb.resume = "allow"
    return to_write


def write_wandb_id(cfg: DictConfig, path: Path) -> None:
    """Keep the W&B run id `pin_wandb_run` chose in ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(str(cfg.logger.wandb.id) + "\n")


def checked_resume(cfg: DictConfig, model: nn.Module) -> tuple[str | None, int]:
    """The checkpoint to resume from (`resume_checkpoint`) and its step, after checking it in one
    line (before any step, and before anything is written: a file that is not a checkpoint of this
    vlr and this model refuses the start)."""
    path = resume_checkpoint(cfg)
    if path is None:
        return None, 0
    option = "ckpt_path" if cfg.get("ckpt_path") else "resume (resume=false starts over)"
    checkpoint = read_checkpoint(path, option)
    check_state_fits(model, checkpoint["state_dict"], path, option)
    return path, int(checkpoint.get("global_step", 0))


def drop_later_rows(loggers: list, step: int) -> None:
    """The CSV rows a killed run logged after the checkpoint it resumes from (``step``; 0 for a
    start from scratch: rows of an earlier start that saved no checkpoint are not this run's) are
    dropped, as the resumed run logs them again."""
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.drop_rows_after(step)
