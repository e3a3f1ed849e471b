"""Fault tolerance: a run killed with SIGKILL in the middle of an epoch and started again with the
same command ends with the same weights and metrics as an uninterrupted run (bit-exact on CPU),
continuing the same W&B run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 20  # 40 images x 5 captions / batch 10
ARGS = ["data.num_train=40", "data.num_val=15", "data.num_test=15", "data.batch_size=10", "trainer.max_epochs=2",
        "callbacks.last_checkpoint.every_n_steps=3", "logger=[csv,wandb]", "seed=3"]  # augmentation and dropout on


def _kill_mid_epoch(tmp_path, run_dir):
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    try:
        while proc.poll() is None:
            time.sleep(0.02)
            try:
                step = torch.load(last, weights_only=True)["global_step"]
            except Exception:  # not written yet, or being written
                continue
            if step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH:  # in the middle of the second epoch
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return step
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the run ended before it could be interrupted")


def test_killed_run_resumes_to_the_same_weights_metrics_and_wandb_run(tmp_path):
    whole = tmp_path / "whole"
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={whole}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    resumed = tmp_path / "resumed"
    killed_at = _kill_mid_epoch(tmp_path, resumed)
    assert not (resumed / "metrics.json").exists()
    run_id = (resumed / "wandb_run_id").read_text().strip()
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={resumed}", cwd=tmp_path)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {resumed / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr

    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH > killed_at
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert json.loads((whole / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())
    # the resumed process continued the W&B run of the killed one
    assert (resumed / "wandb_run_id").read_text().strip() == run_id
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(run_id) for r in runs)


def test_resume_false_starts_over(tmp_path):
    run_dir = tmp_path / "run"
    args = ["data.num_train=20", "data.num_val=10", "data.num_test=10", "data.batch_size=20", "trainer.max_epochs=1",
            "logger=csv", "test=false", f"hydra.run.dir={run_dir}"]
    assert run_cli("vlr.train", *args, cwd=tmp_path).returncode == 0
    proc = run_cli("vlr.train", *args, "resume=false", cwd=tmp_path)
    assert proc.returncode == 0 and "resuming from" not in proc.stdout + proc.stderr
