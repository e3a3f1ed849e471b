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

import contextlib
import csv
import os
import sys
from collections.abc import Mapping
from typing import Literal

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers import MLFlowLogger as _LightningMLFlowLogger
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
    """Lightning's W&B logger, with
    - each run's summary holding the best of every validation metric (``define_metric``: max, or
      min for medr/meanr) instead of the last epoch's;
    - test metrics on their own axis, ``test/step`` (0 for a run's first test), instead of one
      step past training on the trainer's step axis;
    - ``log_model`` offline too: the checkpoints become ``model`` artifacts of the offline run
      (``wandb sync`` uploads them with it), where Lightning refuses the combination;
    - without the ``anonymous=None`` Lightning always passes to ``wandb.init`` (current wandb
      warns on every run that the setting has no effect)."""

    def __init__(self, *args, log_model: Literal["all"] | bool = False, **kwargs):
        super().__init__(*args, log_model=False if kwargs.get("offline") else log_model, **kwargs)  # type: ignore[misc]
        self._log_model = log_model
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)
        self._defined: set[str] = set()
        self._tests = 0

    def _define(self, name: str, **kwargs) -> None:
        # each metric is defined when first logged, by name: W&B applies the first glob that
        # matches, and Lightning's own "*" (its step axis) would shadow a "val/*" or "test/*" rule
        if name not in self._defined:
            self.experiment.define_metric(name, **kwargs)
            self._defined.add(name)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        tests = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
        if tests:
            for name in tests:
                self._define(name, step_metric="test/step")
            self.experiment.log({**tests, "test/step": self._tests})
            self._tests += 1
        rest = {k: v for k, v in metrics.items() if k not in tests}
        for name in (k for k in rest if k.startswith("val/")):
            best = "min" if name in LOWER_IS_BETTER else "max"
            self._define(name, step_metric="trainer/global_step", summary=best)
        if rest:
            super().log_metrics(rest, step)


@contextlib.contextmanager
def wandb_run_per_job():
    """End the job's W&B run when the job ends (``exit_code`` 1 on an error), so the next job of
    an in-process multirun starts its own run: Lightning's logger would otherwise find the
    previous job's run still active and log into it."""
    exit_code = 1
    try:
        yield
        exit_code = 0
    finally:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.run.finish(exit_code=exit_code)


class MLFlowLogger(_LightningMLFlowLogger):
    """Lightning's MLflow logger, with
    - vlr's metric names made MLflow-safe here (``val/i2t/R@1`` is logged as ``val/i2t/R1``,
      ``NDCG@10`` as ``NDCG10``), which Lightning would otherwise do itself with a warning per metric;
    - ``run_id_file``: the MLflow run id is kept there (``<run dir>/mlflow_run_id``), so a resumed
      vlr run continues its MLflow run instead of starting another one."""

    def __init__(self, *args, run_id_file: str | None = None, **kwargs):
        if run_id_file and kwargs.get("run_id") is None and os.path.isfile(run_id_file):
            kwargs["run_id"] = open(run_id_file).read().strip()
        super().__init__(*args, **kwargs)
        self._run_id_file = run_id_file

    @property
    @rank_zero_experiment
    def experiment(self):
        client = super().experiment
        if self._run_id_file and self._run_id and not os.path.isfile(self._run_id_file):
            atomic_write_text(self._run_id_file, self._run_id + "\n", "MLflow run id")
        return client

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k.replace("@", ""): v for k, v in metrics.items()}, step)
