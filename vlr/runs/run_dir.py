"""Run-directory plumbing for `vlr.train`: resume, the W&B run id, multirun + DDP, the sweep value.

A run directory is the unit of work: running the same command with the same
``hydra.run.dir`` again resumes it from ``checkpoints/last.ckpt`` and continues the same
W&B run, whose id is kept in ``<run dir>/wandb_run_id``.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)
WANDB_ID_FILE = "wandb_run_id"
RUN_TOKENIZER_DIR = "tokenizer"  # the WordPiece a run trained on its captions, saved beside its checkpoints


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


# the factors a run's name already says, and overrides that do not change what a run measures
# (where and how it runs and logs); any other override makes a run a variant of its cell
FACTORS = {"seed", "objective", "imbalance", "imbalance.strength", "data", "model"}
PLUMBING = {
    "trainer", "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes", "data.num_workers",
    "data.root", "ckpt_path", "resume", "test", "save_rankings", "rankings_topk", "num_threads", "debug",
    "task_name", "hparams_search", "split", "from_run",
}  # fmt: skip
# groups (and callbacks) that only say where a run writes, how it logs or when it saves last.ckpt;
# the checkpoint callback is not among them: its monitor decides which weights are tested
PLUMBING_GROUPS = ("logger", "paths", "hydra", "callbacks.last_checkpoint", "callbacks.lr_monitor",
                   "callbacks.parameter_counts", "callbacks.model_summary", "callbacks.rich_progress_bar")  # fmt: skip


def is_plumbing(key: str) -> bool:
    """Whether an override's key changes nothing a run measures (where it runs, how it logs)."""
    key = key.lstrip("+~")
    return key in PLUMBING or any(key == g or key.startswith((f"{g}.", f"{g}/")) for g in PLUMBING_GROUPS)


def run_variant(overrides: list[str]) -> tuple[str, list[str]] | None:
    """A short hash of the overrides that make a run differ from its cell's default (a learning
    rate, an objective's option, a preset), with them; None when there are none."""
    kept = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in FACTORS and not is_plumbing(key):
            kept.append(override)
    if not kept:
        return None
    import hashlib

    kept = sorted(kept)
    return hashlib.sha1(" ".join(kept).encode()).hexdigest()[:6], kept


def label_runs(cfg: DictConfig, earlier: list[str] | None = None) -> None:
    """Name W&B and MLflow runs apart when they differ in more than their cell's factors: a
    ``-v<hash>`` suffix on the name (and W&B group), a ``variant`` tag, and the overrides in the
    W&B notes, so a sweep over a learning rate never shows two runs under one name or group.
    ``earlier``: the overrides of the training run a ``vlr.eval`` evaluates (its variant is the
    evaluated run's)."""
    from hydra.core.hydra_config import HydraConfig

    logger = cfg.get("logger")
    if not logger or not HydraConfig.initialized():
        return
    now = [str(o) for o in HydraConfig.get().overrides.task]
    given = {o.split("=", 1)[0].lstrip("+~") for o in now}
    inherited = [o for o in earlier or [] if o.split("=", 1)[0].lstrip("+~") not in given]
    variant = run_variant([*inherited, *now])
    if variant is None:
        return
    label, overrides = variant
    with open_dict(cfg):
        if logger.get("wandb"):
            w = logger.wandb
            w.name, w.group = f"{w.name}-v{label}", f"{w.group}-v{label}"
            w.tags = [*w.tags, f"variant:{label}"]
            w.notes = "variant " + label + ": " + " ".join(overrides)
        if logger.get("mlflow"):
            m = logger.mlflow
            m.run_name = f"{m.run_name}-v{label}"
            m.tags = {**m.tags, "variant": label, "variant_overrides": " ".join(overrides)}


def share_run_dir_with_ddp_children() -> None:
    """Under Hydra multirun, make Lightning's DDP child processes join this job's directory.

    Lightning starts each child with ``sys.argv`` plus ``hydra.run.dir=<HydraConfig run.dir>``;
    in a multirun that would repeat the whole sweep (``-m`` and the sweep lists are in
    ``sys.argv``) in the default run directory. Here ``sys.argv`` becomes this job's own
    overrides, and ``run.dir`` this job's output directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with read_write(hc.run):  # type: ignore[arg-type]  # a structured config node
        hc.run.dir = hc.runtime.output_dir


def sweep_value(cfg: DictConfig, metrics: dict[str, float]) -> float | None:
    """``optimized_metric``: one metric name, or ``{metric: weight}`` summed (to weigh cross-
    and single-modal rsum in one objective)."""
    spec = cfg.get("optimized_metric")
    if not spec:
        return None
    if isinstance(spec, str):
        if spec not in metrics:
            log.warning("optimized_metric %s was not logged; known: %s", spec, sorted(metrics))
        return metrics.get(spec)
    missing = [k for k in spec if k not in metrics]
    if missing:
        raise KeyError(f"optimized_metric names metrics that were not logged: {missing}")
    return float(sum(float(w) * metrics[k] for k, w in spec.items()))


def best_epoch_metrics(
    history: list[dict[str, float]], monitor: str = "val/rsum", mode: str = "max"
) -> dict[str, float]:
    """The validation metrics of the best epoch by ``monitor`` (the checkpoint callback's choice;
    the first epoch wins a tie, as ModelCheckpoint keeps the first best), or {} without any."""
    scored = [h for h in history if monitor in h]
    if not scored:
        return {}
    pick = max if mode == "max" else min
    best = pick(scored, key=lambda h: (h[monitor], -h["epoch"] if mode == "max" else h["epoch"]))
    return {k: float(v) for k, v in best.items() if "/" in k}


LIGHTNING_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "PL_GLOBAL_SEED")


def release_distributed() -> None:
    """End of a multirun job: the next job of the sweep runs in this same process, so tear down
    the process group and the launch variables Lightning left behind; otherwise it would reuse
    a group whose other ranks have exited, on the same port."""
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in LIGHTNING_DDP_ENV:
        os.environ.pop(key, None)
