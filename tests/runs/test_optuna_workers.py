"""Optuna workers sharing one storage (issue 29): a job records the worker running its trial, and a
launch marks only trials of gone workers interrupted; a live worker's trial (here, or on another
host) is left RUNNING (before, it was marked FAIL and its worker's result lost)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tests.conftest import REPO
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
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trials = {name: _ask(study)[0] for name in ("live", "remote", "dead", "never_started")}
    workers = {
        "live": {"host": socket.gethostname(), "pid": live.pid},
        "remote": {"host": "another-host", "pid": 1},
        "dead": {"host": socket.gethostname(), "pid": dead.pid},
    }
    writer = _fresh(tmp_path)  # as each worker's job records itself, in its own process
    for name, worker in workers.items():
        writer.set_user_attr(trial_key(WORKER, trials[name].number), worker)
    try:
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
    finally:
        live.kill()
        live.wait()


def _worker(tmp_path, sweep_dir, hold_until: Path | None = None, **kwargs):
    """A sweep of one trial (the same search in every worker), into its own folder. ``hold_until``:
    the trial waits, idle, after its first last.ckpt until that file exists (it stays RUNNING)."""
    from tests.test_optuna_resume import TINY

    args = [a for a in TINY if not a.startswith("hydra.sweeper.n_trials=")]
    cmd = [sys.executable, "-m", "vlr.train", "hparams_search=optuna", *args, "hydra.sweeper.n_trials=1",
           f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    if hold_until is not None:
        env["VLR_TEST_WAIT_AFTER"] = f"last.ckpt:1:{hold_until}"
        env["PYTHONPATH"] = f"{REPO / 'tests' / 'fault_injection'}:{os.environ.get('PYTHONPATH', '')}"
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, text=True, start_new_session=True, **kwargs)


@pytest.mark.slow
def test_two_workers_on_one_storage_both_finish(tmp_path):
    """Real sweeps (a process boundary: a second worker launched while the first's trial runs)."""
    import sqlite3
    import time

    from tests.test_optuna_resume import _trials

    db = tmp_path / "multirun" / "optuna.db"
    go_on = tmp_path / "go-on"  # the first's trial runs until the second has run its own
    first_log = tmp_path / "first.log"  # a file, not a pipe nobody reads while it runs
    with open(first_log, "w") as log:
        first = _worker(tmp_path, "a", go_on, stdout=subprocess.DEVNULL, stderr=log)
    second = None
    try:
        deadline = time.time() + 300
        while (0, "RUNNING") not in _trials(db):
            assert first.poll() is None, first_log.read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        for _ in range(200):  # until its job has recorded its worker (old code: never; go on after 20 s)
            with sqlite3.connect(db) as con:
                query = "SELECT count(*) FROM study_user_attributes WHERE key = ?"
                if con.execute(query, (f"{WORKER}/0",)).fetchone()[0]:
                    break
            time.sleep(0.1)
        second = _worker(tmp_path, "b", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out_second = second.communicate(timeout=600)[0]
        assert first.poll() is None  # still in its trial
        go_on.touch()
        first.wait(timeout=600)
    finally:  # nothing left behind when an assertion fails: both run in sessions of their own
        go_on.touch()
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert first.returncode == 0, first_log.read_text()[-3000:]
    assert second.returncode == 0, out_second[-3000:]
    assert "0 of 1 trials finished, 0 interrupted" in out_second, out_second[-3000:]
    assert "1 trials of 'vlr-optuna-infonce-synthetic' run in other live workers" in out_second
    assert _trials(db) == [(0, "COMPLETE"), (1, "COMPLETE")]  # each worker ran its trial
