"""Optuna workers sharing one storage (issue 29): a job records the worker running its trial, and a
launch marks only trials of gone workers interrupted; a live worker's trial (here, or on another
host) is left RUNNING (before, it was marked FAIL and its worker's result lost)."""

import os
import socket

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tests.conftest import Died, dead_pid, live_pid, run_main
from vlr.sweeps.callbacks import INTERRUPTED, WORKER, ResumeOptunaStudy, trial_key

LR = "model.optimizer.lr"


def _config(tmp_path, *task):
    sweeper = {
        "_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper",
        "storage": f"sqlite:///{tmp_path / 'optuna.db'}",
        "study_name": "study",
        "n_trials": 6,
        "direction": "maximize",
        "params": {LR: "interval(1e-5, 3e-3)"},
    }
    hydra = {"sweeper": sweeper, "overrides": {"task": list(task), "hydra": []}, "sweep": {"dir": str(tmp_path / "m")}}
    return OmegaConf.create({"hydra": hydra})


def _fresh(tmp_path):
    """The study as another process reads it (optuna caches the trials a study object asked for)."""
    return optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def _ask(study):
    trial = study.ask()
    return trial, trial.suggest_float(LR, 1e-5, 3e-3)


def test_a_job_records_its_worker_on_its_own_trial(tmp_path):
    ResumeOptunaStudy().on_multirun_start(_config(tmp_path))
    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    (other, _), (mine, value) = _ask(study), _ask(study)
    ResumeOptunaStudy().on_job_start(_config(tmp_path, f"{LR}={value}", "seed=1"))
    study = _fresh(tmp_path)
    attrs = {t.number: study.user_attrs.get(trial_key(WORKER, t.number)) for t in study.get_trials()}
    assert attrs == {other.number: None, mine.number: {"host": socket.gethostname(), "pid": os.getpid()}}


def test_a_launch_marks_only_trials_of_gone_workers_interrupted(tmp_path):
    ResumeOptunaStudy().on_multirun_start(_config(tmp_path))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="study", storage=storage)
    trials = {name: _ask(study)[0] for name in ("live", "remote", "dead", "never_started")}
    workers = {
        "live": {"host": socket.gethostname(), "pid": live_pid()},
        "remote": {"host": "another-host", "pid": 1},
        "dead": {"host": socket.gethostname(), "pid": dead_pid()},
    }
    writer = _fresh(tmp_path)  # as each worker's job records itself, in its own process
    for name, worker in workers.items():
        writer.set_user_attr(trial_key(WORKER, trials[name].number), worker)
    ResumeOptunaStudy().on_multirun_start(_config(tmp_path))  # a second worker's launch
    states = {name: _fresh(tmp_path).get_trials()[t.number] for name, t in trials.items()}
    assert {name: t.state for name, t in states.items()} == {
        "live": TrialState.RUNNING,
        "remote": TrialState.RUNNING,
        "dead": TrialState.FAIL,
        "never_started": TrialState.FAIL,
    }
    recorded = _fresh(tmp_path).user_attrs
    assert all(recorded.get(trial_key(INTERRUPTED, trials[name].number)) for name in ("dead", "never_started"))
    assert not any(recorded.get(trial_key(INTERRUPTED, trials[name].number)) for name in ("live", "remote"))
    # the live worker can still finish its trial
    study.tell(trials["live"].number, 1.0)
    assert _fresh(tmp_path).get_trials()[trials["live"].number].state == TrialState.COMPLETE


def test_a_second_worker_runs_its_own_trial_and_leaves_a_live_workers_trial_running(tmp_path):
    """Two workers on one storage, in this process: the first is stopped inside its trial (its
    process is the only one that could finish it), its trial then recorded as another live
    process's; a second worker launched meanwhile runs a trial of its own to its end and leaves
    the first's RUNNING, not interrupted, and the first can still finish it."""
    import vlr.train
    from tests.test_optuna_resume import TINY, _trials

    db = tmp_path / "multirun" / "optuna.db"
    args = ["hparams_search=optuna", *(a for a in TINY if not a.startswith("hydra.sweeper.n_trials=")),
            "hydra.sweeper.n_trials=1"]  # fmt: skip

    def stops_inside_its_trial(cfg):
        raise Died

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlr.train, "train", stops_inside_its_trial)
        with pytest.raises(Died):
            run_main("train", *args, "hydra.sweep.dir=a", cwd=tmp_path)
    assert _trials(db) == [(0, "RUNNING")]
    study = optuna.load_study(study_name="vlr-optuna-infonce-synthetic", storage=f"sqlite:///{db}")
    mine = {"host": socket.gethostname(), "pid": os.getpid()}
    assert study.user_attrs[trial_key(WORKER, 0)] == mine  # recorded by its job
    study.set_user_attr(trial_key(WORKER, 0), {**mine, "pid": live_pid()})  # as if it ran on, elsewhere

    second = run_main("train", *args, "hydra.sweep.dir=b", cwd=tmp_path)
    assert second.returncode == 0, second.output[-3000:]
    assert "0 of 1 trials finished, 0 interrupted" in second.output, second.output[-3000:]
    assert "1 trials of 'vlr-optuna-infonce-synthetic' run in other live workers" in second.output
    assert _trials(db) == [(0, "RUNNING"), (1, "COMPLETE")]  # its own trial, the first's left alone
    reread = optuna.load_study(study_name="vlr-optuna-infonce-synthetic", storage=f"sqlite:///{db}")
    assert not reread.user_attrs.get(trial_key(INTERRUPTED, 0))
    assert (tmp_path / "b" / "0" / "metrics.json").is_file() and not (tmp_path / "a" / "0" / "metrics.json").exists()
    study.tell(0, 1.0)  # the first worker ends its trial
    assert _trials(db) == [(0, "COMPLETE"), (1, "COMPLETE")]
