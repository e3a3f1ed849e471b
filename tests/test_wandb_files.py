"""`vlr.tracking.wandb_files` reads back what wandb itself wrote offline, records spanning blocks included."""

import os
import subprocess
import sys

import pytest
import torch

from vlr.tracking.wandb_files import WandbFileError, raw_records, read_run

WRITER = """
import sys, wandb
run = wandb.init(project="t", dir=sys.argv[1], mode="offline", name="reader-check", tags=["a:1"],
                 config={"lr": 0.5, "nested": {"k": 2}})
run.define_metric("val/rsum", summary="max")
for i, v in enumerate([3, 9, 4] * 10):  # 30 rows of 5 KB: records cross the 32 KiB block boundaries
    run.log({"val/rsum": float(v), "blob": "x" * 5000 + str(i)})
run.finish()
"""


def test_an_offline_run_reads_back_config_history_metrics_and_summary(tmp_path):
    # written by another process, as a training run does: wandb's service may still be writing
    # the file's last records when finish() returns in the process that logged them
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own service, not this process's
    subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], check=True, capture_output=True, timeout=300, env=env)
    rows = [{"val/rsum": float(v), "blob": "x" * 5000 + str(i)} for i, v in enumerate([3, 9, 4] * 10)]
    got = read_run(tmp_path / "wandb")
    assert got.name == "reader-check" and got.tags == ["a:1"]
    assert got.config["lr"] == 0.5 and got.config["nested"] == {"k": 2}
    history = [h for h in got.history if "val/rsum" in h]
    assert [h["val/rsum"] for h in history] == [r["val/rsum"] for r in rows]
    assert [h["blob"] for h in history] == [r["blob"] for r in rows]
    assert got.metrics["val/rsum"] == {"max"} and got.summary["val/rsum"] == {"max": 9.0}
    assert sum(1 for _ in raw_records(next((tmp_path / "wandb").rglob("run-*.wandb")))) > len(rows)


def test_a_file_that_is_not_a_run_is_named(tmp_path):
    bad = tmp_path / "run-x.wandb"
    torch.save({"a": 1}, bad)
    with pytest.raises(WandbFileError, match=r"run-x.wandb: not a W&B run file"):
        read_run(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WandbFileError, match=r"empty: expected one run-\*.wandb file, found 0"):
        read_run(empty)
