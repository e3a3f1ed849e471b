"""Hydra callbacks for sweeps (``hydra.callbacks``): an Optuna study that resumes when re-launched,
and a summary of every sweep (a table and a trade-off figure, in W&B too) when it ends.

hydra-optuna-sweeper keeps its study in ``hydra.sweeper.storage`` (a SQLite file by default in
``hparams_search=optuna``) and loads it when it exists, but then runs ``n_trials`` *more*
trials, and a trial the interrupted sweep was running stays RUNNING in the file forever.
`ResumeOptunaStudy` runs before the sweeper is built (``on_multirun_start``): it marks such a
trial FAIL and queues its parameters again (the next trial asks for exactly them), and lowers
``n_trials`` to the trials still to run, so a re-launched sweep finishes the one it continues:
``n_trials`` finished trials in all, the interrupted one re-run. (So raising ``n_trials`` extends a
finished study.) A seeded sampler gets ``seed + trials so far``: restarted with its first seed it
would propose the study's first parameters again.

Several workers may share one storage (launched in parallel, or one re-launched while another
still runs): each job records the worker running its trial (``vlr_worker``: host and process id,
at ``on_job_start``), and a RUNNING trial is taken for interrupted only when its worker is gone
(this host, no such process). A trial of another host, whose process cannot be checked from here,
is left alone; so is a live one, which before was marked FAIL under its worker (whose result was
then lost: Optuna refuses to change a finished trial). A trial that never reached its job's start
(killed between being asked for and started) has no worker and counts as interrupted. Workers
launched in parallel each run their ``n_trials`` less the trials finished when they start, and
need a ``hydra.sweep.dir`` each (a job folder is one run, `vlr.runs.lock`).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger(__name__)

# what vlr records of a trial from outside it: study user attributes "<key>/<trial number>" (Optuna's
# public API sets a trial's own attributes only from inside that trial, while it runs)
INTERRUPTED = "vlr_interrupted"  # True: the trial was marked FAIL because its sweep was stopped
WORKER = "vlr_worker"  # {"host", "pid"} of the process running the trial's job
SETTINGS = "vlr_search"  # study user attribute: the search the study was created for (see search_settings)


def search_settings(config: DictConfig) -> dict:
    """What makes two launches the same search: the command line's overrides (those that change
    what a run measures: not ``hydra.*``, ``n_trials``, loggers, devices, ...; `vlr.runs.is_plumbing`),
    the search space and the direction. A study is resumed only by a launch with the same settings."""
    from omegaconf import OmegaConf

    from vlr.runs import is_plumbing

    sweeper = config.hydra.sweeper
    overrides = sorted(str(o) for o in config.hydra.overrides.task if not is_plumbing(str(o).split("=", 1)[0]))
    params = OmegaConf.to_container(sweeper.params) if sweeper.get("params") else {}
    direction = OmegaConf.to_container(sweeper.direction) if OmegaConf.is_list(sweeper.direction) else sweeper.direction
    return {"overrides": overrides, "params": params, "direction": direction}


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///`` storage URL (None for other URLs or in-memory)."""
    if not storage.startswith("sqlite:///") or storage in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(storage.removeprefix("sqlite:///"))


def trial_key(key: str, number: int) -> str:
    """The study user attribute that holds ``key`` (`WORKER`, `INTERRUPTED`) of trial ``number``."""
    return f"{key}/{number}"


class ResumeOptunaStudy(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        sweeper = config.hydra.sweeper
        storage = sweeper.get("storage")
        if "optuna" not in str(sweeper.get("_target_", "")).lower() or not storage:
            return
        import optuna
        from optuna.trial import TrialState

        path = sqlite_file(str(storage))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "A new study created" INFO line
        settings = search_settings(config)
        try:
            study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
        except KeyError:  # a new study: created here with the search it is for (the sweeper then loads it)
            self._own_job_folders(config, f"{sweeper.study_name}-0")
            direction = settings["direction"]
            study = optuna.create_study(
                study_name=sweeper.study_name,
                storage=storage,
                directions=direction if isinstance(direction, list) else [direction],
            )
            study.set_user_attr(SETTINGS, settings)
            log.info(f"Optuna study {sweeper.study_name!r} starts in {storage}")
            return
        attrs = study.user_attrs
        stored = attrs.get(SETTINGS)
        if stored is not None and stored != settings:
            shown = _difference(stored, settings)
            # SystemExit: Hydra turns a callback's exceptions into warnings and would sweep on
            raise SystemExit(
                f"hydra.sweeper.study_name={sweeper.study_name}: the study in {storage} is another search ({shown}); "
                "re-launch its own command to resume it, or choose another hydra.sweeper.study_name"
            )
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state.is_finished() and not attrs.get(trial_key(INTERRUPTED, t.number))]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        interrupted = [t for t in running if not worker_alive(attrs.get(trial_key(WORKER, t.number)))]
        if len(running) > len(interrupted):
            log.info(f"{len(running) - len(interrupted)} trials of {sweeper.study_name!r} run in other live workers")
        requeued = 0
        for trial in interrupted:
            study.set_user_attr(trial_key(INTERRUPTED, trial.number), True)
            study.tell(trial.number, state=TrialState.FAIL)
            if trial.params:  # a trial killed before its parameters were drawn has nothing to re-run
                study.enqueue_trial(trial.params)
                requeued += 1
        left = max(0, int(sweeper.n_trials) - len(finished))
        log.info(
            f"Optuna study {sweeper.study_name!r} resumes from {storage}: {len(finished)} of {sweeper.n_trials} "
            f"trials finished, {len(interrupted)} interrupted ({requeued} re-queued with the same parameters), "
            f"{left} to run"
        )
        sweep_dir = Path(config.hydra.sweep.dir)
        if left == 0:  # no job creates the sweep folder, where the sweeper writes optimization_results.yaml
            sweep_dir.mkdir(parents=True, exist_ok=True)
        self._own_job_folders(config, f"resume{len(trials)}")
        with read_write(sweeper), open_dict(sweeper):
            sweeper.n_trials = left
            if sweeper.get("sampler") and sweeper.sampler.get("seed") is not None:
                # the sampler restarts in this process: with its first seed it would draw the study's first
                # parameters again; offset by the trials so far (still reproducible from the study's state)
                sweeper.sampler.seed = int(sweeper.sampler.seed) + len(trials)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        """Record this process as the worker of the trial this job runs (its parameters are the
        job's overrides), so that another worker's launch never takes it for interrupted."""
        sweeper = config.hydra.sweeper
        storage = sweeper.get("storage")
        if "optuna" not in str(sweeper.get("_target_", "")).lower() or not storage:
            return
        import optuna
        from optuna.trial import TrialState

        try:
            study = optuna.load_study(study_name=sweeper.study_name, storage=storage)
        except KeyError:
            return
        given = dict(str(o).split("=", 1) for o in config.hydra.overrides.task if "=" in str(o))
        attrs = study.user_attrs
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            key = trial_key(WORKER, trial.number)
            if trial.params and key not in attrs and _same_params(trial.params, given):
                study.set_user_attr(key, {"host": socket.gethostname(), "pid": os.getpid()})
                return

    @staticmethod
    def _own_job_folders(config: DictConfig, prefix: str) -> None:
        """A sweep folder that already holds jobs (``hydra.sweep.dir`` given, launched before): job
        numbers restart at 0, and job 0's folder holds an earlier run, which vlr.train would resume.
        This launch's jobs go into ``<prefix>-<job>`` folders (each job's config is composed again
        from the hydra overrides: one more)."""
        sweep_dir = Path(config.hydra.sweep.dir)
        if sweep_dir.is_dir() and any(p.is_dir() for p in sweep_dir.iterdir()):
            with read_write(config.hydra), open_dict(config.hydra):
                config.hydra.overrides.hydra.append(f"hydra.sweep.subdir={prefix}-${{hydra.job.num}}")


def worker_alive(worker) -> bool:
    """Whether the worker recorded for a trial may still run it: a live process of this host, or
    any process of another host (not checkable from here). None (no worker recorded): no."""
    from vlr.runs.leftovers import process_alive

    if not isinstance(worker, dict) or not isinstance(worker.get("pid"), int):
        return False
    if worker.get("host") != socket.gethostname():
        return True
    return worker["pid"] != os.getpid() and process_alive(worker["pid"])


def _same_params(params: dict, given: dict[str, str]) -> bool:
    """Whether a trial's parameters are the values a job was given on its command line."""
    for name, value in params.items():
        text = given.get(name)
        if text is None:
            return False
        try:
            same = float(text) == float(value) if isinstance(value, (int, float)) else text == str(value)
        except ValueError:
            same = False
        if not same:
            return False
    return True


def _difference(stored: dict, settings: dict) -> str:
    """What differs between two searches, briefly: overrides only there / only now, other keys."""
    parts = []
    there, now = set(stored.get("overrides", [])), set(settings["overrides"])
    if there - now:
        parts.append("only there: " + " ".join(sorted(there - now)))
    if now - there:
        parts.append("only now: " + " ".join(sorted(now - there)))
    parts += [
        f"{k}: {stored.get(k)} there, {settings[k]} now"
        for k in ("params", "direction")
        if stored.get(k) != settings[k]
    ]
    return "; ".join(parts)


class SummarizeSweep(Callback):
    """At the end of a sweep (``on_multirun_end``): one row per finished job, with the overrides
    that differ between jobs and its metrics (test; val for an Optuna search, which must not be
    read off test), written to ``<sweep dir>/sweep.csv``,
    and a trade-off figure ``<sweep dir>/tradeoff.png`` (cross-modal rsum against i2i + t2t
    NDCG@10, one labelled point per job). When the sweep logs to W&B (``logger.wandb`` in its
    config), both go to a W&B run of their own (job type ``compare``) as a Table and an Image.
    Hydra skips this when a job of the sweep failed."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        import csv

        from omegaconf import OmegaConf

        from vlr.sweeps.summary import sweep_rows, write_sweep_figure

        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(
            (p for p in sweep_dir.glob("*") if (p / "metrics.json").is_file()), key=lambda p: (len(p.name), p.name)
        )
        if not jobs:
            log.info(f"no job of {sweep_dir} wrote metrics.json (test=false?): no sweep summary")
            return
        search = "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower()
        columns, rows, points = sweep_rows(jobs, prefer="val" if search else "test")
        table = sweep_dir / "sweep.csv"
        with open(table, "w", newline="") as fh:
            csv.writer(fh).writerows([columns, *rows])
        split = rows[0][columns.index("split")]
        figure, sidecar = write_sweep_figure(jobs, points, sweep_dir, str(split))
        log.info(f"sweep summary: {table}, {sidecar} (what was held fixed)" + (f", {figure}" if figure else ""))
        wandb = OmegaConf.select(config, "logger.wandb")
        if not wandb:
            return
        from vlr.tracking.wandb_report import log_summary_run

        folder = log_summary_run(
            project=str(wandb.get("project") or "vlr"),
            entity=wandb.get("entity"),
            name=f"sweep-{sweep_dir.resolve().parent.name}-{sweep_dir.name}",
            save_dir=sweep_dir,
            images={"tradeoff": figure} if figure else {},
            tables={"sweep": (columns, rows)},
            offline=bool(wandb.get("offline", True)),
        )
        log.info(f"sweep summary logged to W&B: {folder}")
