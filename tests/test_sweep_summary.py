"""`vlr.sweeps.summary`: the rows and points of a sweep, from job folders as Hydra writes them."""

import json

import pytest

from vlr.sweeps.summary import single_modal_ndcg, sweep_rows, tradeoff_figure


def _job(root, name, overrides, metrics):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def test_rows_show_the_overrides_that_differ_and_the_single_modal_measure_by_relevance(tmp_path):
    base = {
        "test/rsum": 100.0,
        "test/rsum_single": 70.0,
        "test/i2i/scene_NDCG@10": 30.0,
        "test/t2t/scene_NDCG@10": 40.0,
    }
    jobs = [
        _job(tmp_path, "0", ["objective=infonce", "model.optimizer.lr=0.00123456", "seed=1"], base),
        _job(tmp_path, "1", ["objective=sad", "model.optimizer.lr=0.002", "seed=1"], {**base, "test/rsum": 90.0}),
    ]
    columns, rows, points = sweep_rows(jobs)
    assert columns[:4] == ["job", "model.optimizer.lr", "objective", "split"]  # seed is the same: not shown
    assert rows[1][:4] == ["1", "0.002", "sad", "test"]
    assert rows[0][columns.index("rsum_single")] == 70.0 and rows[0][columns.index("i2t/R@1")] is None
    assert rows[0][columns.index("i2i/scene_NDCG@10")] == 30.0
    assert "i2i/rouge_l_NDCG@10" not in columns  # no job was graded by ROUGE-L: no empty column
    assert points == [("0", "lr=0.00123, objective=infonce", 100.0, 70.0), ("1", "lr=0.002, objective=sad", 90.0, 70.0)]
    assert tradeoff_figure(points, tmp_path / "t.png", "t").read_bytes()[:4] == b"\x89PNG"


def test_val_metrics_are_used_when_a_job_has_no_test_metrics_and_missing_measures_make_no_point(tmp_path):
    jobs = [
        _job(tmp_path, "0", ["objective=infonce"], {"test/rsum": 1.0, "val/rsum": 2.0}),
        _job(tmp_path, "1", ["objective=sad"], {"val/rsum": 3.0}),
    ]
    columns, rows, points = sweep_rows(jobs)
    assert [r[columns.index("split")] for r in rows] == ["val", "val"]
    assert [r[columns.index("rsum")] for r in rows] == [2.0, 3.0]
    assert points == [] and tradeoff_figure(points, tmp_path / "t.png", "t") is None
    assert single_modal_ndcg({"x/i2i/scene_NDCG@10": 1.0}, "x/") is None
    assert single_modal_ndcg({"x/rsum_single": 3.5}, "x/") == pytest.approx(3.5)
