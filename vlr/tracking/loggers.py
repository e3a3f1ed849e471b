"""vlr's loggers: `ResumableCSVLogger` (a CSV history that survives a resume), and Lightning's
W&B and MLflow loggers with vlr's run ids, metric axes and names.

`ResumableCSVLogger` writes what Lightning's CSVLogger writes (``metrics.csv``, a column per
metric in sorted order plus ``step``, and ``hparams.yaml``), except that a resumed run keeps
its earlier rows: Lightning's deletes ``metrics.csv`` when its folder is not empty, so a run
that resumes from ``last.ckpt`` would lose every row logged before the kill. This one keeps
the rows the checkpoint covers (``drop_rows_after``, called by `vlr.runs` with the resumed
checkpoint's global step: rows a killed run logged after it are logged again by the resumed
run) and appends after them, so a killed-and-resumed run's ``metrics.csv`` reads like an
uninterrupted one's. Rows are flushed whenever ``last.ckpt`` is written
(`vlr.callbacks.LastCheckpoint`), so what a checkpoint covers is on disk with it. It is
written here, on Lightning's public ``Logger`` base, rather than by patching Lightning's
private CSV writer.
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import io
import os
import sys
import warnings
from argparse import Namespace
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from vlr.io import atomic_write_text
from vlr.tracking.console import wandb_settings

METRICS_FILE, HPARAMS_FILE = "metrics.csv", "hparams.yaml"


class ResumableCSVLogger(Logger):
    """``<save_dir>/<name>/<version>/metrics.csv`` and ``hparams.yaml`` (``version``: a folder
    name, ``n`` for ``version_n``, or None for the next free ``version_n``)."""

    def __init__(
        self,
        save_dir: str,
        name: str | None = "lightning_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ):
        super().__init__()
        self.directory, self.experiment_name, self.prefix = os.fspath(save_dir), name or "", prefix
        self.flush_every = flush_logs_every_n_steps
        self.chosen_version = version
        self.pending: list[dict[str, Any]] = []  # rows logged since the last save
        self.columns: list[str] | None = None  # metrics.csv's header (read from the file on first use)
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return self.experiment_name

    @property
    def version(self) -> int | str:
        if self.chosen_version is None:
            root = Path(self.root_dir)
            taken = [int(p.name[8:]) for p in root.glob("version_*") if p.is_dir() and p.name[8:].isdigit()]
            self.chosen_version = max(taken, default=-1) + 1
        return self.chosen_version

    @property
    def save_dir(self) -> str:
        return self.directory

    @property
    def root_dir(self) -> str:
        return os.path.join(self.directory, self.experiment_name)

    @property
    def log_dir(self) -> str:
        version = self.version if isinstance(self.version, str) else f"version_{self.version}"
        return os.path.join(self.root_dir, version)

    @property
    def metrics_file(self) -> str:
        return os.path.join(self.log_dir, METRICS_FILE)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        self.hparams.update(vars(params) if isinstance(params, Namespace) else dict(params))
        os.makedirs(self.log_dir, exist_ok=True)
        save_hparams_to_yaml(os.path.join(self.log_dir, HPARAMS_FILE), self.hparams)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        step = len(self.pending) if step is None else step
        row = {
            (f"{self.prefix}-{k}" if self.prefix else k): v.item() if isinstance(v, torch.Tensor) else v
            for k, v in metrics.items()
        }
        self.pending.append({**row, "step": step})
        if (step + 1) % self.flush_every == 0:
            self.save()

    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not os.path.isfile(self.metrics_file):
            return [], []
        with open(self.metrics_file, newline="") as fh:
            reader = csv.DictReader(fh)
            return list(reader.fieldnames or []), list(reader)

    def _write(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.metrics_file, out.getvalue(), "metrics log")

    @rank_zero_only
    def save(self) -> None:
        """Append the pending rows to metrics.csv (rewritten with a wider header when they bring
        new columns; an existing file's rows are kept)."""
        super().save()
        if not self.pending:
            return
        if self.columns is None:
            self.columns = self._read()[0]
        new = set().union(*self.pending) - set(self.columns)
        if new or not os.path.isfile(self.metrics_file):
            self.columns = sorted([*self.columns, *new])
            self._write(self.columns, [*self._read()[1], *self.pending])
        else:
            with open(self.metrics_file, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=self.columns).writerows(self.pending)
        self.pending = []

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    @rank_zero_only
    def drop_rows_after(self, step: int) -> None:
        """Remove the rows a checkpoint at global step ``step`` does not cover (rewritten atomically).
        Lightning logs a row with the count of steps taken before it (``step`` = global step - 1
        at logging time), so the checkpoint covers exactly the rows with step < its global step.
        Test rows are the end-of-run report of an earlier start (a run stopped by ``max_steps``
        and continued): the resumed run tests again, so they go too."""
        columns, rows = self._read()

        def covered(row: dict[str, str]) -> bool:
            if any(v and k.startswith("test/") for k, v in row.items()):
                return False
            return not row.get("step") or int(float(row["step"])) < step

        kept = [r for r in rows if covered(r)]
        if len(kept) != len(rows):
            self._write(columns, kept)


# validation metrics where smaller is better; every other val/* is best at its maximum
LOWER_IS_BETTER = tuple(f"val/{d}/{m}" for d in ("i2t", "t2i") for m in ("medr", "meanr"))


class WandbLogger(LightningWandbLogger):
    """Lightning's W&B logger, with
    - each run's summary holding the best of every validation metric (``define_metric``: max, or
      min for medr/meanr) instead of the last epoch's;
    - test metrics on their own axis, ``test/step`` (0 for a run's first test), instead of one
      step past training on the trainer's step axis;
    - ``log_model`` offline too: the checkpoints become ``model`` artifacts of the offline run
      (``wandb sync`` uploads them with it), where Lightning refuses the combination; vlr logs
      them itself (`log_checkpoints`), online and offline alike;
    - W&B quiet (no run summary or history block) when the output is not a terminal
      (`vlr.tracking.console`);
    - the W&B run started here without the ``anonymous=None`` Lightning always passes to
      ``wandb.init`` (current wandb warns on every run that the setting has no effect);
      Lightning's logger then adopts the running run (its public behaviour for ``wandb.run``)."""

    def __init__(self, log_model: Literal["all"] | bool = False, **kwargs: Any):
        super().__init__(log_model=False, **kwargs)
        own = set(inspect.signature(LightningWandbLogger.__init__).parameters) - {"self", "kwargs"}
        where = kwargs.get("save_dir") or kwargs.get("dir")
        self.run_settings: dict[str, Any] = {  # what Lightning would pass to wandb.init, less anonymous=None
            "name": kwargs.get("name"),
            "project": kwargs.get("project") or os.environ.get("WANDB_PROJECT", "lightning_logs"),
            "dir": os.fspath(where) if where is not None else None,
            "id": kwargs.get("version") or kwargs.get("id"),
            "resume": "allow",
            **({"anonymous": "allow"} if kwargs.get("anonymous") else {}),
            **{k: v for k, v in kwargs.items() if k not in own},
        }
        quiet = wandb_settings(self.run_settings.get("settings"))  # no summary block in a redirected log
        if quiet is not None:
            self.run_settings["settings"] = quiet
        self.offline, self.model_logging = bool(kwargs.get("offline")), log_model
        self.artifact_name = kwargs.get("checkpoint_name")
        self.run_started = False
        self.checkpoint_callbacks: dict[int, ModelCheckpoint] = {}  # log_model=True: logged when the run ends
        self.logged_checkpoints: dict[str, float] = {}  # path -> modification time when logged
        self.defined_metrics: set[str] = set()
        self.tests_logged = 0

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        import wandb

        if self.run_started or wandb.run is not None:  # ours, or one Lightning adopts (and says so)
            self.run_started = True
            return super().experiment
        if self.offline:
            os.environ["WANDB_MODE"] = "dryrun"  # as Lightning does for offline=True
        run = wandb.init(**self.run_settings)
        if self.run_settings.get("sync_tensorboard"):  # Lightning's step axis, as it defines it for its own runs
            run.define_metric("*", step_metric="global_step")
        else:
            run.define_metric("trainer/global_step")
            run.define_metric("*", step_metric="trainer/global_step", step_sync=True)
        self.run_started = True
        with warnings.catch_warnings():  # Lightning's note that it adopts a running run: the one started here
            warnings.filterwarnings("ignore", message="There is a wandb run already in progress")
            return super().experiment

    def define_once(self, name: str, **kwargs: Any) -> None:
        # each metric is defined when first logged, by name: W&B applies the first glob that
        # matches, and Lightning's own "*" (its step axis) would shadow a "val/*" or "test/*" rule
        if name not in self.defined_metrics:
            self.experiment.define_metric(name, **kwargs)
            self.defined_metrics.add(name)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        tests = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
        if tests:
            for name in tests:
                self.define_once(name, step_metric="test/step")
            self.experiment.log({**tests, "test/step": self.tests_logged})
            self.tests_logged += 1
        rest = {k: v for k, v in metrics.items() if k not in tests}
        for name in (k for k in rest if k.startswith("val/")):
            best = "min" if name in LOWER_IS_BETTER else "max"
            self.define_once(name, step_metric="trainer/global_step", summary=best)
        if rest:
            super().log_metrics(rest, step)

    def after_save_checkpoint(self, checkpoint_callback: ModelCheckpoint) -> None:
        """``log_model="all"`` (or ``True`` with ``save_top_k=-1``): each checkpoint as it is
        written; ``True``: the callback's checkpoints when the run ends (`finalize`)."""
        every = self.model_logging == "all" or (self.model_logging is True and checkpoint_callback.save_top_k == -1)
        if every:
            self.log_checkpoints(checkpoint_callback)
        elif self.model_logging is True:
            self.checkpoint_callbacks[id(checkpoint_callback)] = checkpoint_callback

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        if status == "success" and self.run_started:  # as Lightning: checkpoints only of a run that succeeded
            for callback in self.checkpoint_callbacks.values():
                self.log_checkpoints(callback)

    @rank_zero_only
    def log_checkpoints(self, callback: ModelCheckpoint) -> None:
        """The callback's checkpoints not logged yet (or rewritten since) as ``model`` artifacts,
        oldest first; the best one with the aliases ``latest`` and ``best``."""
        import wandb

        found = {callback.last_model_path: callback.current_score, callback.best_model_path: callback.best_model_score}
        found.update(callback.best_k_models)
        settings = ("monitor", "mode", "save_last", "save_top_k", "save_weights_only")
        for path, score in sorted(
            ((p, s) for p, s in found.items() if p and os.path.isfile(p)), key=lambda item: os.path.getmtime(item[0])
        ):
            written = os.path.getmtime(path)
            if self.logged_checkpoints.get(path, -1.0) >= written:
                continue
            metadata = {
                "score": score.item() if isinstance(score, torch.Tensor) else score,
                "original_filename": Path(path).name,
                type(callback).__name__: {k: getattr(callback, k) for k in settings if hasattr(callback, k)},
            }
            name = self.artifact_name or f"model-{self.experiment.id}"
            artifact = wandb.Artifact(name=name, type="model", metadata=metadata)
            artifact.add_file(path, name="model.ckpt")
            aliases = ["latest", "best"] if path == callback.best_model_path else ["latest"]
            self.experiment.log_artifact(artifact, aliases=aliases)
            self.logged_checkpoints[path] = written


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


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLflow logger, with
    - vlr's metric names made MLflow-safe here (``val/i2t/R@1`` is logged as ``val/i2t/R1``,
      ``NDCG@10`` as ``NDCG10``), which Lightning would otherwise do itself with a warning per metric;
    - ``run_id_file``: the MLflow run id is kept there (``<run dir>/mlflow_run_id``, written when
      the run first logs), so a resumed vlr run continues its MLflow run instead of starting another."""

    def __init__(self, *args, run_id_file: str | None = None, **kwargs):
        if run_id_file and kwargs.get("run_id") is None and os.path.isfile(run_id_file):
            kwargs["run_id"] = open(run_id_file).read().strip()
        super().__init__(*args, **kwargs)
        self.run_id_file = run_id_file

    def keep_run_id(self) -> None:
        if self.run_id_file and not os.path.isfile(self.run_id_file) and self.run_id:
            atomic_write_text(self.run_id_file, self.run_id + "\n", "MLflow run id")

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        super().log_hyperparams(params)
        self.keep_run_id()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics({k.replace("@", ""): v for k, v in metrics.items()}, step)
        self.keep_run_id()
