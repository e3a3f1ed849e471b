"""What a run reports once training ends: the best epoch's validation metrics (selection is on
val only), and the value a sweep optimises."""

from __future__ import annotations

import contextlib
import logging

from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


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


def report_best_epoch(cfg: DictConfig, trainer, best_val: dict[str, float], metrics: dict[str, float]) -> None:
    """The best epoch where dashboards show a run's value: TensorBoard's ``hp_metric`` (its
    HParams tab; the sweep value of the best epoch) and W&B's ``best/*`` run summary."""
    if not best_val:
        return
    boards = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
    if boards:
        with contextlib.suppress(KeyError):  # a bad optimized_metric fails at the end, as without TensorBoard
            value = sweep_value(cfg, metrics)
            for logger in boards:
                if value is not None:
                    logger.log_metrics({"hp_metric": value}, step=trainer.global_step)
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update({f"best/{k}": v for k, v in best_val.items()})
