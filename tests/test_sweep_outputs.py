"""A sweep's outputs say what they held fixed (``sweep.json``, the figure's title), and its
figure shows the chance level and the seed spread on axes that run to the measures' maxima."""

import json

import matplotlib
import pytest
from matplotlib.figure import Figure

from vlr.sweeps.summary import RSUM_MAX, SINGLE_MODAL_MAX, held_fixed, sweep_rows, write_sweep_figure

matplotlib.use("Agg")


def _job(root, name, overrides, rsum, single, seed):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    choices = {
        "experiment": "imbalance_study",
        "imbalance": "text_weak",
        "data": "synthetic",
        "hydra/launcher": "basic",
    }
    (job / ".hydra" / "hydra.yaml").write_text(json.dumps({"hydra": {"runtime": {"choices": choices}}}))
    config = {
        "seed": seed,
        "data": {"name": "synthetic", "batch_size": 25},
        "imbalance": {"name": "text_weak", "strength": 0.5},
        "objective": {"name": overrides[0].split("=")[1]},
    }
    (job / ".hydra" / "config.yaml").write_text(json.dumps(config))
    metrics = {"test/rsum": rsum, "test/rsum_single": single}
    (job / "metrics.json").write_text(json.dumps(metrics))
    chance = {"test/rsum": 30.0, "test/rsum_single": 45.0}
    (job / "evaluation.json").write_text(json.dumps({"split": "test", "chance": chance}))
    return job


@pytest.fixture
def sweep(tmp_path):
    runs = [
        ("infonce", 0, 300.0, 100.0),
        ("infonce", 1, 302.0, 101.0),
        ("sad", 0, 290.0, 110.0),
        ("sad", 1, 291.0, 113.0),
    ]
    jobs = [
        _job(tmp_path, str(i), [f"objective={o}", f"seed={s}", "trainer.max_epochs=2"], r, n, s)
        for i, (o, s, r, n) in enumerate(runs)
    ]
    return tmp_path, jobs


def test_what_was_held_fixed_is_written_beside_the_table(sweep):
    root, jobs = sweep
    fixed = held_fixed(jobs)
    assert fixed["experiment"] == "imbalance_study" and fixed["imbalance"] == "text_weak"
    assert fixed["imbalance.strength"] == "0.5" and fixed["data.batch_size"] == "25"
    assert fixed["trainer.max_epochs"] == "2"
    assert "seed" not in fixed and "objective" not in fixed and "hydra/launcher" not in fixed  # varied / Hydra's own
    _, _, points = sweep_rows(jobs)
    _, sidecar = write_sweep_figure(jobs, points, root, "test")
    info = json.loads(sidecar.read_text())
    assert info["held_fixed"] == fixed and info["varied"] == ["objective", "seed"]
    assert info["chance"] == {"rsum": 30.0, "ndcg_single@10": 45.0}


def test_the_figure_shows_chance_and_seed_spread_on_unexaggerated_axes(sweep, monkeypatch):
    root, jobs = sweep
    drawn = []
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **kw: drawn.append(self))
    _, _, points = sweep_rows(jobs)
    write_sweep_figure(jobs, points, root, "test")
    (ax,) = drawn[0].axes
    assert ax.get_xlim()[1] == RSUM_MAX and ax.get_ylim()[1] == SINGLE_MODAL_MAX
    assert ax.get_xlim()[0] <= 30.0 and ax.get_ylim()[0] <= 45.0  # chance is on the axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert sorted(tuple(line.get_xdata()) for line in dashed if line.get_xdata()[0] == line.get_xdata()[1]) == [
        (30.0, 30.0)
    ]
    assert any(tuple(line.get_ydata()) == (45.0, 45.0) for line in dashed)
    means = sorted(
        (tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.get_lines() if line.get_marker() == "o"
    )
    assert means == [((290.5,), (111.5,)), ((301.0,), (100.5,))]  # one point per objective: the seeds' mean
    assert len(ax.containers) == 2 and all(c.has_xerr and c.has_yerr for c in ax.containers)  # their spread
    assert "held fixed: " in ax.get_title() and "experiment=imbalance_study" in ax.get_title()
    assert "imbalance.strength=0.5" in ax.get_title()
