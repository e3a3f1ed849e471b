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


def pin_wandb_run(cfg: DictConfig) -> None:
    """Give the W&B logger this run directory's id, so a resumed run continues the same W&B run."""
    logger = cfg.get("logger")
    if not logger or "wandb" not in logger or not logger.wandb:
        return
    path = Path(cfg.paths.output_dir) / WANDB_ID_FILE
    if path.exists():
        run_id = path.read_text().strip()
    else:
        run_id = secrets.token_hex(4)  # W&B's id shape (8 of [a-z0-9]); secrets leaves the seeded RNGs alone
        if _is_rank_zero():  # DDP children start after rank 0 wrote it, and read it
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(run_id + "\n")
    with open_dict(cfg):
        cfg.logger.wandb.id = run_id
        cfg.logger.wandb.resume = "allow"


def checked_resume(cfg: DictConfig, model: nn.Module, loggers: list) -> str | None:
    """The checkpoint to resume from (`resume_checkpoint`), after checking it in one line (before
    any step: a file that is not a checkpoint of this vlr and this model); the CSV rows a killed
    run logged after it are dropped, as the resumed run logs them again."""
    path = resume_checkpoint(cfg)
    if path is None:  # a start from scratch: rows of an earlier start that saved no checkpoint are not this run's
        for logger in loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.drop_rows_after(0)
        return None
    option = "ckpt_path" if cfg.get("ckpt_path") else "resume (resume=false starts over)"
    checkpoint = read_checkpoint(path, option)
    check_state_fits(model, checkpoint["state_dict"], path, option)
    for logger in loggers:
        if isinstance(logger, ResumableCSVLogger):
            logger.drop_rows_after(int(checkpoint.get("global_step", 0)))
    return path
