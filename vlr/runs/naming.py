"""Run names: a run that differs from its cell in more than the cell's factors is labelled a variant.

A sweep over a learning rate must never show two W&B runs under one name or group (the
default workspace pools a group's runs as seeds of one cell); `label_runs` gives such runs a
``-v<hash>`` suffix, a ``variant`` tag and their overrides in the notes. `is_plumbing` is also
what Optuna's study name leaves out (`vlr.sweeps.callbacks`).
"""

from __future__ import annotations

import hashlib

from omegaconf import DictConfig, open_dict

# the factors a run's name already says, and overrides that do not change what a run measures
# (where and how it runs and logs); any other override makes a run a variant of its cell
FACTORS = {"seed", "objective", "imbalance", "imbalance.strength", "data", "model"}
PLUMBING = {
    "trainer", "trainer.devices", "trainer.accelerator", "trainer.strategy", "trainer.num_nodes", "data.num_workers",
    "data.root", "ckpt_path", "resume", "resume_allow_changes", "test", "save_rankings", "rankings_topk",
    "num_threads", "debug", "task_name", "hparams_search", "split", "from_run", "trainer.default_root_dir",
    "data.cache_dir",
}  # fmt: skip
# groups (and callbacks) that only say where a run writes, how it logs or when it saves last.ckpt;
# the checkpoint callback is not among them: its monitor decides which weights are tested
PLUMBING_GROUPS = ("logger", "paths", "hydra", "callbacks.last_checkpoint", "callbacks.lr_monitor",
                   "callbacks.parameter_counts", "callbacks.model_summary", "callbacks.rich_progress_bar",
                   "callbacks.progress_log")  # fmt: skip


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
        if logger.get("tensorboard"):  # the same name and group as the W&B run
            t = logger.tensorboard
            t.name, t.version = f"{t.name}-v{label}", f"{t.version}-v{label}"
        if logger.get("mlflow"):
            m = logger.mlflow
            m.run_name = f"{m.run_name}-v{label}"
            m.tags = {**m.tags, "variant": label, "variant_overrides": " ".join(overrides)}
