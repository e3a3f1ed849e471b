"""`ResumableCSVLogger`: Lightning's CSVLogger, except that a resumed run keeps its earlier rows.

Lightning's CSV writer deletes ``metrics.csv`` when its folder is not empty, so a run that
resumes from ``last.ckpt`` loses every row logged before the kill. This one keeps the rows
the checkpoint covers (``drop_rows_after``, called by `vlr.train` with the resumed
checkpoint's global step: rows a killed run logged after it are logged again by the
resumed run) and appends after them, so a killed-and-resumed run's ``metrics.csv`` reads
like an uninterrupted one's. Rows are flushed whenever ``last.ckpt`` is written
(`vlr.callbacks.LastCheckpoint`), so what a checkpoint covers is on disk with it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vlr.io import atomic_write_text


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Keep an existing metrics.csv (Lightning deletes it); remember its columns."""
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as fh:
                self.metrics_keys = list(csv.DictReader(fh).fieldnames or [])

    def drop_rows_after(self, step: int) -> None:
        """Remove the rows a checkpoint at global step ``step`` does not cover (rewritten atomically).
        Lightning logs a row with the count of steps taken before it (``step`` = global step - 1
        at logging time), so the checkpoint covers exactly the rows with step < its global step."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], list(reader)
        kept = [r for r in rows if not r.get("step") or int(float(r["step"])) < step]
        if len(kept) == len(rows):
            return
        from io import StringIO

        out = StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.metrics_file_path, out.getvalue(), "metrics log")


class ResumableCSVLogger(CSVLogger):
    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment  # type: ignore[return-value]  # Lightning types it as its private writer

    @rank_zero_only
    def drop_rows_after(self, step: int) -> None:
        self.experiment.drop_rows_after(step)


# validation metrics where smaller is better; every other val/* is best at its maximum
LOWER_IS_BETTER = tuple(f"val/{d}/{m}" for d in ("i2t", "t2i") for m in ("medr", "meanr"))


class WandbLogger(_LightningWandbLogger):
    """Lightning's W&B logger, with each run's summary holding the best of every validation
    metric (``define_metric``: max, or min for medr/meanr) instead of the last epoch's, and
    without the ``anonymous=None`` Lightning always passes to ``wandb.init`` (current wandb
    warns on every run that the setting has no effect)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._best_summaries: set[str] = set()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # each val metric is defined when first logged, by name: W&B applies the first glob that
        # matches, and Lightning's own "*" (its step axis) would shadow a "val/*" summary rule
        new = [k for k in metrics if k.startswith("val/") and k not in self._best_summaries]
        for name in new:
            summary = "min" if name in LOWER_IS_BETTER else "max"
            self.experiment.define_metric(name, step_metric="trainer/global_step", summary=summary)
            self._best_summaries.add(name)
        super().log_metrics(metrics, step)
