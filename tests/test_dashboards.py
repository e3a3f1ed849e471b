"""What a sweep leaves in the dashboards, read back from the files the loggers wrote offline:
one W&B run per job (test metrics on their own axis, the checkpoint as an artifact), TensorBoard
event files, an MLflow store, and the sweep's own summary (table + trade-off figure, in W&B too)."""

import csv
import json

import pytest

from tests.conftest import run_main
from vlr.tracking.wandb_files import read_run

TINY = [
    "data.num_train=12",
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=20",
    "data.num_workers=0",
    "trainer.max_epochs=2",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """``python -m vlr.train -m objective=infonce,triplet`` with every logger, in-process (`run_main`)."""
    import os

    root = tmp_path_factory.mktemp("dashboards")
    env = {"WANDB_DATA_DIR": str(root / "wandb-data"), "WANDB_CACHE_DIR": str(root / "wandb-cache")}
    before = dict(os.environ)
    os.environ.update(env)
    try:
        proc = run_main(
            "train",
            "-m",
            "objective=infonce,triplet",
            "logger=[csv,wandb,tensorboard,mlflow]",
            "logger.wandb.log_model=true",
            *TINY,
            "hydra.sweep.dir=sweep",
            cwd=root,
        )
    finally:  # what the run and its libraries set (WANDB_SERVICE, MLFLOW_TRACKING_URI, ...) goes too
        os.environ.clear()
        os.environ.update(before)
    assert proc.returncode == 0, proc.output[-3000:]
    return root, proc


def _val_rows(job):
    return [r for r in csv.DictReader(open(job / "csv" / "metrics.csv")) if r.get("val/rsum")]


@pytest.mark.slow
def test_each_job_has_its_own_wandb_run_with_test_metrics_on_their_own_axis(sweep):
    root, proc = sweep
    names = []
    for job, objective in ((root / "sweep" / "0", "infonce"), (root / "sweep" / "1", "triplet")):
        files = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
        assert len(files) == 1, files  # not the previous job's run, reused
        run = read_run(files[0])
        names.append(run.name)
        assert run.config["objective"]["name"] == objective
        written = json.loads((job / "metrics.json").read_text())
        tests = [h for h in run.history if any(k.startswith("test/") for k in h)]
        assert len(tests) == 1 and tests[0]["test/step"] == 0  # logged once, at test step 0
        for key, value in written.items():
            if key.startswith("test/"):
                assert tests[0][key] == pytest.approx(value, abs=1e-4), key
                assert run.step_metrics[key] == "test/step", key
        assert run.step_metrics["val/rsum"] == "trainer/global_step"
        # the best checkpoint as a model artifact of the offline run (wandb sync uploads it)
        [artifact] = run.artifacts
        assert artifact["type"] == "model" and set(artifact["aliases"]) == {"latest", "best"}
        assert artifact["metadata"]["original_filename"] == "best.ckpt"
        assert artifact["files"] == {"model.ckpt": (job / "checkpoints" / "best.ckpt").stat().st_size}
        assert artifact["metadata"]["score"] == pytest.approx(max(float(r["val/rsum"]) for r in _val_rows(job)))
    # the smaller data makes both runs one variant of their cells: the same "-v<hash>", named in the notes
    variant = names[0].rsplit("-", 1)[1]
    assert names == [f"infonce-synthetic-tiny-none0.0-s0-{variant}", f"triplet-synthetic-tiny-none0.0-s0-{variant}"]
    assert "wandb run already in progress" not in proc.output


@pytest.mark.slow
def test_tensorboard_and_mlflow_presets_write_what_metrics_csv_holds(sweep):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, proc = sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("vlr")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert {name.rsplit("-", 1)[0] for name in runs} == {
        "infonce-synthetic-tiny-none0.0-s0",
        "triplet-synthetic-tiny-none0.0-s0",
    }
    for job, objective in ((root / "sweep" / "0", "infonce"), (root / "sweep" / "1", "triplet")):
        val = _val_rows(job)
        expected = [float(r["val/rsum"]) for r in val]
        (board,) = (job / "tensorboard").glob("*/*")  # <group>/<name>: the W&B run's
        assert board.name.startswith(f"{objective}-synthetic-tiny-none0.0-s0-v") and board.parent.name.startswith(
            "synthetic"
        )
        events = EventAccumulator(str(board))
        events.Reload()
        assert [e.value for e in events.Scalars("val/rsum")] == pytest.approx(expected, abs=1e-4)
        assert [e.step for e in events.Scalars("val/rsum")] == [int(r["step"]) for r in val]
        # the HParams tab's metric: the run's optimized_metric (val/rsum) at its best epoch
        assert events.Scalars("hp_metric")[-1].value == pytest.approx(max(expected), abs=1e-4)

        run = client.get_run((job / "mlflow_run_id").read_text().strip())
        assert run.data.tags["objective"] == objective and run.info.run_name.startswith(objective)
        assert "data.num_train=12" in run.data.tags["variant_overrides"]
        history = client.get_metric_history(run.info.run_id, "val/i2t/R1")  # R@1, MLflow-safe
        assert [m.value for m in history] == pytest.approx([float(r["val/i2t/R@1"]) for r in val], abs=1e-4)
        assert run.data.params["objective/name"] == objective
    assert "MLFlow only allows" not in proc.output  # vlr's names are made MLflow-safe first


@pytest.mark.slow
def test_the_sweep_summary_is_a_table_and_a_figure_in_files_and_in_wandb(sweep):
    root, _ = sweep
    rows = list(csv.DictReader(open(root / "sweep" / "sweep.csv")))
    assert [r["objective"] for r in rows] == ["infonce", "triplet"]
    for row in rows:
        metrics = json.loads((root / "sweep" / row["job"] / "metrics.json").read_text())
        assert row["split"] == "test"
        assert float(row["rsum"]) == pytest.approx(metrics["test/rsum"])
        expected = metrics["test/i2i/scene_NDCG@10"] + metrics["test/t2t/scene_NDCG@10"]
        assert float(row["rsum_single"]) == pytest.approx(expected)  # under the primary relevance (scene)
    assert (root / "sweep" / "tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [folder] = list((root / "sweep" / "wandb").glob("offline-run-*"))
    run = read_run(folder)
    assert run.job_type == "compare" and run.name == "sweep-dashboards0-sweep"
    [logged] = run.history
    assert logged["tradeoff/_type"] == "image-file" and logged["sweep/_type"] == "table-file"
    assert (folder / "files" / logged["tradeoff/path"]).read_bytes() == (root / "sweep" / "tradeoff.png").read_bytes()
    table = json.loads((folder / "files" / logged["sweep/path"]).read_text())
    assert table["columns"] == list(rows[0].keys())
    assert [[str(c) for c in r] for r in table["data"]] == [list(r.values()) for r in rows]


@pytest.mark.slow
def test_compare_reads_the_sweeps_offline_runs_once_each(sweep):
    import shutil

    from experiments.compare import cells_from_wandb_offline, check_comparable

    root, _ = sweep
    cells = cells_from_wandb_offline([root / "sweep"])  # the compare run has no objective: not a cell
    assert sorted(c["objective"] for c in cells) == ["infonce", "triplet"]
    check_comparable(cells)  # parameter counts differ between objectives, but follow from the config
    # a resumed run writes a second offline folder under its id: still one cell, the newest
    [first] = list((root / "sweep" / "0" / "wandb").glob("offline-run-*"))
    date, run_id = first.name.removeprefix("offline-run-").split("-")
    later = first.with_name(f"offline-run-29991231_235959-{run_id}")
    shutil.copytree(first, later)
    try:
        assert len(cells_from_wandb_offline([root / "sweep"])) == 2
    finally:
        shutil.rmtree(later)
