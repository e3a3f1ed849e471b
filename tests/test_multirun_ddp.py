"""A Hydra sweep whose jobs each train with DDP: one directory per job, shared by its ranks."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_sweep_of_ddp_jobs_writes_one_directory_per_job(tmp_path):
    sweep = tmp_path / "multi"
    proc = run_cli(
        "vlr.train",
        "-m",
        "objective=infonce,triplet",
        "trainer=ddp_cpu",
        "data.num_train=20",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=20",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "logger=csv",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for job, objective in (("0", "infonce"), ("1", "triplet")):
        job_dir = sweep / job
        assert (job_dir / "checkpoints" / "last.ckpt").exists() and (job_dir / "checkpoints" / "best.ckpt").exists()
        assert json.loads((job_dir / "metrics.json").read_text())["test/rsum"] >= 0
        assert f"name: {objective}" in (job_dir / ".hydra" / "config.yaml").read_text()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    assert not (tmp_path / "outputs").exists()  # no rank wandered off to a run directory of its own
    assert not (tmp_path / "multirun").exists()  # nor re-ran the sweep
