"""vlr's logger classes, in-process: the MLflow run a resumed vlr run continues, the CSV history
a resumed run keeps, and W&B's offline model artifacts."""

import csv
from pathlib import Path

import torch

from vlr.tracking.loggers import MLFlowLogger, ResumableCSVLogger


def test_mlflow_run_id_file_makes_a_resumed_run_continue_the_same_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    uri, id_file = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run" / "mlflow_run_id"
    id_file.parent.mkdir()
    first = MLFlowLogger(tracking_uri=uri, experiment_name="vlr", run_name="r", run_id_file=str(id_file))
    first.log_metrics({"val/i2t/R@1": 1.0}, step=0)
    first.finalize("success")
    run_id = id_file.read_text().strip()
    assert run_id == first.run_id
    again = MLFlowLogger(tracking_uri=uri, experiment_name="vlr", run_name="r", run_id_file=str(id_file))
    again.log_metrics({"val/i2t/R@1": 2.0}, step=1)
    assert again.run_id == run_id
    client = MlflowClient(tracking_uri=uri)
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/i2t/R1")] == [(0, 1.0), (1, 2.0)]
    assert len(client.search_runs([client.get_experiment_by_name("vlr").experiment_id])) == 1


def _log_rows(logger, rows):
    for step, row in rows:
        logger.log_metrics(row, step=step)
    logger.save()


ROWS = [(0, {"train/loss": 1.5, "epoch": 0}), (1, {"train/loss": torch.tensor(1.25), "epoch": 0})]
MORE = [(1, {"val/rsum": 50.0, "epoch": 0}), (2, {"train/loss": 1.0, "epoch": 1})]  # a new column


def test_the_csv_logger_writes_what_lightnings_writes(tmp_path):
    """Same rows, same columns (sorted, widened when a metric appears), same hparams.yaml, same folders."""
    from lightning.pytorch.loggers import CSVLogger

    ours, theirs = (
        ResumableCSVLogger(tmp_path / "ours", name="csv", version=""),
        CSVLogger(tmp_path / "theirs", "csv", ""),
    )
    for logger in (ours, theirs):
        logger.log_hyperparams({"seed": 3, "model": {"embed_dim": 8}})
        _log_rows(logger, ROWS)
        _log_rows(logger, MORE)
        logger.finalize("success")
    for name in ("metrics.csv", "hparams.yaml"):
        assert (tmp_path / "ours" / "csv" / name).read_bytes() == (tmp_path / "theirs" / "csv" / name).read_bytes()
    numbered = [ResumableCSVLogger(tmp_path / "n"), CSVLogger(tmp_path / "n2")]
    assert [Path(x.log_dir).relative_to(x.save_dir) for x in numbered] == [Path("lightning_logs/version_0")] * 2


def test_a_resumed_csv_logger_keeps_the_rows_its_checkpoint_covers(tmp_path):
    first = ResumableCSVLogger(tmp_path, name="csv", version="")
    _log_rows(first, [*ROWS, *MORE])  # the killed run logged steps 0-2; its checkpoint is at global step 2
    again = ResumableCSVLogger(tmp_path, name="csv", version="")
    again.drop_rows_after(2)
    _log_rows(again, [(2, {"train/loss": 0.5, "epoch": 1}), (3, {"train/grad": 7.0, "epoch": 1})])
    with open(tmp_path / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["step"], r["train/loss"], r["val/rsum"], r["train/grad"]) for r in rows] == [
        ("0", "1.5", "", ""),
        ("1", "1.25", "", ""),
        ("1", "", "50.0", ""),
        ("2", "0.5", "", ""),  # the resumed run's row, not the killed one's 1.0
        ("3", "", "", "7.0"),
    ]


def test_the_wandb_logger_logs_offline_checkpoints_and_test_metrics_on_their_axis(tmp_path, capfd, monkeypatch):
    """Offline with ``log_model=True``: the best checkpoint becomes a ``model`` artifact when the
    run succeeds (Lightning refuses the combination); test metrics on ``test/step``; and no
    warning about W&B's ``anonymous`` setting (vlr starts the run without it)."""
    import wandb
    from lightning.pytorch.callbacks import ModelCheckpoint

    from vlr.tracking.loggers import WandbLogger
    from vlr.tracking.wandb_files import read_run

    monkeypatch.delenv("WANDB_SILENT", raising=False)  # wandb's warnings on stderr, as a user sees them
    logger = WandbLogger(project="vlr", name="r", save_dir=str(tmp_path), offline=True, log_model=True, id="abcd1234")
    best = tmp_path / "best.ckpt"
    best.write_bytes(b"weights")
    callback = ModelCheckpoint(dirpath=tmp_path, monitor="val/rsum", mode="max")
    callback.best_model_path, callback.best_model_score = str(best), torch.tensor(42.0)
    callback.best_k_models = {str(best): torch.tensor(42.0)}
    try:
        logger.log_metrics({"val/rsum": 42.0, "trainer/global_step": 3}, step=3)
        logger.after_save_checkpoint(callback)
        logger.log_metrics({"test/rsum": 40.0})
        logger.finalize("success")
    finally:
        wandb.finish()
        wandb.teardown()  # the service writes the artifact's record after finish() returns; teardown waits for it
    run = read_run(next(tmp_path.glob("wandb/offline-run-*-abcd1234")))
    [artifact] = run.artifacts
    assert artifact["type"] == "model" and set(artifact["aliases"]) == {"latest", "best"}
    assert artifact["metadata"]["score"] == 42.0 and artifact["metadata"]["original_filename"] == "best.ckpt"
    assert artifact["files"] == {"model.ckpt": len(b"weights")}
    assert [h["test/step"] for h in run.history if "test/rsum" in h] == [0]
    assert "anonymous" not in capfd.readouterr().err
