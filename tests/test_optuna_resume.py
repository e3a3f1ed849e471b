"""``hparams_search=optuna`` keeps its study in multirun/optuna.db and a re-launched sweep finishes it.
The sweeps run in-process (`run_main`: Hydra's whole command-line path); a sweep killed in its
second trial is one whose process dies there (`Died`, which nothing swallows): the study file is
left as a SIGKILL leaves it, that trial RUNNING with its parameters drawn."""

import json
import sqlite3

import pytest

from tests.conftest import Died, run_main

TINY = [
    "hydra.sweeper.n_trials=2",
    "data.num_train=12",
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=20",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "logger=csv",
]


def _launch(tmp_path, *extra):
    """``python -m vlr.train hparams_search=optuna TINY extra...`` in ``tmp_path``, to its end."""
    return run_main("train", "hparams_search=optuna", *TINY, *extra, cwd=tmp_path)


def _trials(db) -> list[tuple[int, str]]:
    """(number, state) of every trial, read with sqlite3 (not through optuna)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        try:
            return con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        except sqlite3.OperationalError:  # the tables are being created
            return []


def _has_params(db, number: int) -> bool:
    with sqlite3.connect(db) as con:
        query = "SELECT count(*) FROM trial_params JOIN trials USING (trial_id) WHERE number = ?"
        return con.execute(query, (number,)).fetchone()[0] == 2


def _job_dirs(tmp_path) -> list:
    return sorted(p.parent for p in (tmp_path / "multirun").rglob("metrics.json"))


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_and_reruns_the_interrupted_trial(tmp_path):
    import optuna

    import vlr.train

    db = tmp_path / "multirun" / "optuna.db"
    started = []
    real = vlr.train.train

    def dies_in_the_second_trial(cfg):
        started.append(cfg.seed)
        if len(started) == 2:
            raise Died
        return real(cfg)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vlr.train, "train", dies_in_the_second_trial)
        with pytest.raises(Died):
            _launch(tmp_path)
    # killed while running its second trial, its parameters drawn
    assert _trials(db) == [(0, "COMPLETE"), (1, "RUNNING")] and _has_params(db, 1)
    assert len(_job_dirs(tmp_path)) == 1

    second = _launch(tmp_path)
    out = second.output
    assert second.returncode == 0, out[-3000:]
    assert "1 of 2 trials finished, 1 interrupted (1 re-queued with the same parameters), 1 to run" in out
    assert _trials(db) == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE")]
    assert len(_job_dirs(tmp_path)) == 2  # one more trial ran, not two
    study = optuna.load_study(study_name="vlr-optuna-infonce-synthetic", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert trials[2].params == trials[1].params != trials[0].params  # the interrupted trial was re-run
    assert trials[2].params["model.optimizer.lr"] != trials[0].params["model.optimizer.lr"]
    assert set(trials[1].params) == {"model.optimizer.lr", "objective.temperature"}
    # each trial's value is its job's optimized metric: val rsum + 0.5 x val rsum_single of its best epoch
    for job_dir, trial in zip(_job_dirs(tmp_path), (trials[0], trials[2]), strict=True):  # sweep dirs sort by time
        metrics = json.loads((job_dir / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val/rsum"] + 0.5 * metrics["val/rsum_single"], abs=1e-6)
    assert study.best_value == max(trials[0].value, trials[2].value)

    third = _launch(tmp_path)
    out = third.output
    assert third.returncode == 0, out[-3000:]
    assert "2 of 2 trials finished, 0 interrupted (0 re-queued with the same parameters), 0 to run" in out
    assert _trials(db) == [(0, "COMPLETE"), (1, "FAIL"), (2, "COMPLETE")]
    assert len(_job_dirs(tmp_path)) == 2


@pytest.mark.slow
def test_a_relaunch_into_the_same_sweep_folder_runs_in_new_folders_and_another_search_is_refused(tmp_path):
    import optuna

    db = tmp_path / "multirun" / "optuna.db"
    first = _launch(tmp_path, "hydra.sweep.dir=fixed", "hydra.sweeper.n_trials=1")
    assert first.returncode == 0, first.output[-3000:]
    trial0 = json.loads((tmp_path / "fixed" / "0" / "metrics.json").read_text())
    # one more trial into the same sweep folder: not into job 0's folder, which holds trial 0's run
    more = _launch(tmp_path, "hydra.sweep.dir=fixed", "hydra.sweeper.n_trials=2")
    out = more.output
    assert more.returncode == 0, out[-3000:]
    assert "resuming from" not in out  # no trial resumes another's checkpoint
    assert json.loads((tmp_path / "fixed" / "0" / "metrics.json").read_text()) == trial0
    [new] = list((tmp_path / "fixed").glob("resume1-0/metrics.json"))
    trials = optuna.load_study(study_name="vlr-optuna-infonce-synthetic", storage=f"sqlite:///{db}").get_trials()
    metrics = json.loads(new.read_text())
    assert trials[1].value == pytest.approx(metrics["val/rsum"] + 0.5 * metrics["val/rsum_single"], abs=1e-6)
    # the same study name for another search (another imbalance) is refused, in one line, before any trial
    other = _launch(tmp_path, "imbalance=text_weak")
    out = other.output
    assert other.returncode != 0
    assert (
        "hydra.sweeper.study_name=vlr-optuna-infonce-synthetic: the study in sqlite:///multirun/optuna.db is "
        "another search (only now: imbalance=text_weak); re-launch its own command" in out
    )
    assert len(optuna.load_study(study_name="vlr-optuna-infonce-synthetic", storage=f"sqlite:///{db}").trials) == 2
    # where it runs is not part of the search: the same search on the CPU explicitly resumes (0 to run)
    same = _launch(tmp_path, "hydra.sweep.dir=fixed", "hydra.sweeper.n_trials=2", "trainer.accelerator=cpu")
    out = same.output
    assert same.returncode == 0 and "2 of 2 trials finished" in out, out[-3000:]
    # a new study into the same folder: its jobs get their own folders too
    other = _launch(tmp_path, "hydra.sweep.dir=fixed", "hydra.sweeper.n_trials=1", "hydra.sweeper.study_name=other")
    out = other.output
    assert other.returncode == 0 and "resuming from" not in out, out[-3000:]
    assert (tmp_path / "fixed" / "other-0-0" / "metrics.json").is_file()
    assert json.loads((tmp_path / "fixed" / "0" / "metrics.json").read_text()) == trial0
