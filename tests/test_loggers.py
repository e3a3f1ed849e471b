"""vlr's logger classes, in-process: the MLflow run a resumed vlr run continues."""

import pytest

from vlr.tracking.loggers import MLFlowLogger


@pytest.mark.slow  # two MLflow runs
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
