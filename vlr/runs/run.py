"""`Run`: the bookkeeping of one training run's folder, in the order `vlr.train` needs it.

`vlr.train.train` is the recipe (seed, build, fit, select on val, test); everything it needs
from the run folder comes from here, so the configuration is read for bookkeeping in one
place: the run's name and W&B id are settled when the `Run` is opened, before anything is
built from the configuration.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from vlr.runs.folder import RunFolder, resolved
from vlr.runs.leftovers import clean_leftovers, vlr_temp_folders
from vlr.runs.lock import RunLock, is_launched_rank
from vlr.runs.multirun import share_run_dir_with_ddp_children
from vlr.runs.naming import label_runs
from vlr.runs.results import best_epoch_metrics, report_best_epoch, sweep_value
from vlr.runs.resume import checked_resume, drop_later_rows, pin_wandb_run, write_wandb_id
from vlr.runs.run_log import accept_run_log, refuse_run_log
from vlr.runs.stopping import fit_until_stopped

log = logging.getLogger("vlr")

RUN_TOKENIZER_DIR = "tokenizer"  # the WordPiece a run trained on its captions, saved beside its checkpoints


class Run:
    def __init__(self, cfg: DictConfig):
        """Open the run folder: DDP children of a multirun job join it; the process that starts
        the run checks that the folder's run is this configuration's (`RunFolder`) and locks it
        (`RunLock`); the W&B run continues the folder's one (``wandb_run_id``), and a variant of
        its cell is labelled as one. These settle ``cfg.logger``, so a `Run` is opened before any
        logger is built. Nothing is written into the folder until `start` has checked the
        checkpoint too; `close` gives the folder back."""
        share_run_dir_with_ddp_children()
        self.cfg = cfg
        self.dir = Path(cfg.paths.output_dir)
        self.last_checkpoint = self.dir / "checkpoints" / "last.ckpt"
        self.lock = RunLock(cfg.paths.output_dir)
        self.folder: RunFolder | None = None
        self.changes: dict = {}
        self.accepted = self.held_a_run = False
        if not is_launched_rank():
            self.folder = RunFolder(cfg)
            self.held_a_run = bool(self.folder.holds_run())
            try:
                self.changes = self.folder.check()
                self.lock.acquire()
            except Exception:
                self._refuse()
                raise
        self.wandb_id_file = pin_wandb_run(cfg)
        label_runs(cfg)
        clean_leftovers(vlr_temp_folders(cfg))  # temp folders of killed runs, before this one builds

    def _refuse(self) -> None:
        """A check failed: Hydra's files of the folder's accepted start put back, this start's log
        lines dropped; the folder is as it was."""
        if self.folder is not None:
            self.folder.restore_hydra_files()
            refuse_run_log()

    def close(self) -> None:
        """Release the folder's lock (the run ended, or failed). A start that failed before it
        was accepted (building the data or the model) leaves a folder that held a run as it was."""
        if not self.accepted and self.folder is not None and self.held_a_run:
            self._refuse()
        self.lock.release()

    def start(self, trainer, model, tokenizer=None) -> str | None:
        """Check the checkpoint to resume from (it must fit the model); only then write into the
        folder (`RunFolder.accept`: an old run moved aside under ``resume=false``, this
        configuration and its allowed changes recorded, the W&B id, the log file), record what
        the run is (its configuration for every logger; ``tokenizer``, a WordPiece trained on
        this data's captions, beside the checkpoints: it belongs to the weights, and `vlr.eval`
        of them uses this copy), and return the checkpoint to resume from."""
        try:
            ckpt_path, step = checked_resume(self.cfg, model)
        except Exception:
            self._refuse()
            raise
        if self.folder is not None:
            self.folder.accept(self.changes)
            if self.wandb_id_file is not None:
                write_wandb_id(self.cfg, self.wandb_id_file)
            accept_run_log()
        self.accepted = True
        if trainer.is_global_zero:
            log.info("run folder: %s", self.dir.resolve())
        if tokenizer is not None and trainer.is_global_zero:
            tokenizer.save_pretrained(str(self.dir / RUN_TOKENIZER_DIR))
        if trainer.loggers:  # the run's own options: a config composed with Hydra's node leaves it out
            config = resolved(self.cfg)
            for logger in trainer.loggers:  # Lightning loggers write from rank 0 only
                logger.log_hyperparams(config)
        drop_later_rows(trainer.loggers, step)
        return ckpt_path

    def fit(self, trainer, model, datamodule, ckpt_path: str | None) -> None:
        """Train; Ctrl-C or SIGTERM end the command once ``last.ckpt`` is saved (exit 130 / 143)."""
        fit_until_stopped(trainer, model, datamodule, ckpt_path, self.last_checkpoint)

    def best_epoch(self, trainer, model) -> tuple[dict[str, float], dict[str, float]]:
        """The best epoch's validation metrics (by the checkpoint callback's monitor: selection
        is on val only) and every metric the run ended with, the best epoch's val ones in place
        of the last epoch's; the best epoch is also reported to TensorBoard and W&B."""
        callback = trainer.checkpoint_callback
        monitor = getattr(callback, "monitor", None) or "val/rsum"
        best_val = best_epoch_metrics(model.selectable_val_history(), monitor, getattr(callback, "mode", "max"))
        metrics = {**{k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}, **best_val}
        report_best_epoch(self.cfg, trainer, best_val, metrics)
        return best_val, metrics

    def report_results(self, trainer) -> None:
        """Say where the results are: ``metrics.json`` (written by the test) and the best checkpoint."""
        if not trainer.is_global_zero:
            return
        callback = trainer.checkpoint_callback
        best = getattr(callback, "best_model_path", "") if callback else ""
        metrics = self.dir.resolve() / "metrics.json"
        results = f"metrics {metrics}" if metrics.is_file() else "no metrics.json (test=false)"
        log.info("done: %s; best checkpoint %s", results, Path(best).resolve() if best else "none (no validation)")

    def sweep_value(self, metrics: dict[str, float]) -> float | None:
        """The value a sweep optimises (``optimized_metric``)."""
        return sweep_value(self.cfg, metrics)
