"""Fault tolerance: a run killed with SIGKILL (at the worst moments too) and started again with the
same command ends with the same weights and metrics as an uninterrupted run (bit-exact on CPU),
continuing the same W&B run. The killed runs are real processes (the suite's one kill test); the
uninterrupted run, the final resume and the other cases run in-process (`run_vlr`)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import lightning.pytorch as pl
import pytest
import torch

from tests.conftest import REPO, run_vlr

pytestmark = pytest.mark.slow
STEPS_PER_EPOCH = 20  # 40 images x 5 captions / batch 10
ARGS = [
    "data.num_train=40",
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=10",
    "trainer.max_epochs=2",
    "callbacks.last_checkpoint.every_n_steps=3",
    "logger=[csv,wandb]",
    "seed=3",
]  # augmentation and dropout on


def _last_step(run_dir) -> int | None:
    try:
        return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    except Exception:  # not written yet, or being written
        return None


def _start(tmp_path, run_dir, env=None, **kwargs):
    """``python -m vlr.train ARGS hydra.run.dir=<run_dir>`` as a process of its own."""
    full = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1", **(env or {})}
    full.pop("WANDB_SERVICE", None)
    cmd = [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=tmp_path, env=full, start_new_session=True, **kwargs)


def _kill_mid_epoch(tmp_path, run_dir):
    """SIGKILL the run once it saved a last.ckpt past where it started, in the middle of epoch 2."""
    started = _last_step(run_dir) or 0
    proc = _start(tmp_path, run_dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None:
            time.sleep(0.02)
            step = _last_step(run_dir)
            if step is not None and step > max(started, STEPS_PER_EPOCH) and step % STEPS_PER_EPOCH:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return step
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail("the run ended before it could be interrupted")


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted reference run every kill test compares with."""
    tmp_path = tmp_path_factory.mktemp("whole")
    run = run_vlr("train", *ARGS, dir=tmp_path / "run")
    assert run.returncode == 0, run.output[-3000:]
    return tmp_path / "run"


def _csv_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_same_run(whole, resumed):
    """Everything a run leaves: final weights (bit-equal), best.ckpt (same weights and score),
    the tested checkpoint's metrics, every CSV row, one W&B run, no stray checkpoint files."""
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    best_a = torch.load(whole / "checkpoints" / "best.ckpt", weights_only=True)
    best_b = torch.load(resumed / "checkpoints" / "best.ckpt", weights_only=True)
    assert best_a["epoch"] == best_b["epoch"]
    for key in best_a["state_dict"]:
        assert torch.equal(best_a["state_dict"][key], best_b["state_dict"][key]), key
    score = [
        next(v["best_model_score"] for k, v in c["callbacks"].items() if k.startswith("ModelCheckpoint"))
        for c in (a, b)
    ]
    assert float(score[0]) == float(score[1])
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert json.loads((whole / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())
    assert _csv_rows(whole) == _csv_rows(resumed)
    run_id = (resumed / "wandb_run_id").read_text().strip()
    assert all(p.name.endswith(run_id) for p in (resumed / "wandb").glob("offline-run-*"))


def test_runs_killed_at_the_worst_moments_resume_to_the_same_weights_metrics_and_wandb_run(tmp_path, whole):
    """One run directory, three real processes killed in turn, then the same command completes it:
    1. dies right after the first best.ckpt, before that epoch's last.ckpt (last.ckpt is a mid-epoch one);
    2. dies half-way through writing its 3rd last.ckpt ($TMPDIR on tmpfs): the previous one stays whole;
    3. SIGKILLed from outside in the middle of the second epoch."""
    resumed = tmp_path / "resumed"
    inject = {"PYTHONPATH": f"{REPO / 'tests' / 'fault_injection'}:{os.environ.get('PYTHONPATH', '')}"}
    for fault in ({"VLR_TEST_DIE_AFTER": "best.ckpt:1"}, {"VLR_TEST_DIE_WRITING": "last.ckpt:3", "TMPDIR": "/dev/shm"}):
        proc = _start(tmp_path, resumed, env={**inject, **fault}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 137, err[-3000:]  # it really died there
        step = _last_step(resumed)  # the previous last.ckpt, whole
        assert step is not None and 0 < step < 2 * STEPS_PER_EPOCH
    run_id = (resumed / "wandb_run_id").read_text().strip()
    killed_at = _kill_mid_epoch(tmp_path, resumed)
    assert STEPS_PER_EPOCH < killed_at < 2 * STEPS_PER_EPOCH
    assert not (resumed / "metrics.json").exists()

    run = run_vlr("train", *ARGS, dir=resumed, root=tmp_path)  # the same command again
    assert run.returncode == 0, run.output[-3000:]
    assert f"resuming from {resumed / 'checkpoints' / 'last.ckpt'}" in run.output
    _assert_same_run(whole, resumed)
    # every process continued the W&B run of the first
    assert (resumed / "wandb_run_id").read_text().strip() == run_id
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 4 and all(r.endswith(run_id) for r in runs)


class InterruptAt(pl.Callback):
    """Ctrl-C at the end of training step ``step``, as a user's: SIGINT to this process (`vlr.train`'s
    handler stops through Lightning's own SIGTERM handling, the path an external SIGTERM takes)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_saves_between_steps_and_the_resumed_run_is_the_same(tmp_path, whole):
    resumed = tmp_path / "resumed"
    at = STEPS_PER_EPOCH + 5
    stop = [f"+callbacks.interrupt._target_={__name__}.InterruptAt", f"+callbacks.interrupt.step={at}"]
    run = run_vlr("train", *ARGS, *stop, dir=resumed)
    assert run.returncode == 130, run.output[-3000:]
    assert "run the same command to resume" in run.output
    stopped = _last_step(resumed)
    assert stopped == at and stopped % 3  # saved at the stop, not a periodic save
    assert not (resumed / "metrics.json").exists()
    run = run_vlr("train", *ARGS, dir=resumed)
    assert run.returncode == 0, run.output[-3000:]
    _assert_same_run(whole, resumed)


def test_max_steps_in_the_middle_of_an_epoch_leaves_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "data.num_train=20",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=10",
        "trainer.max_steps=7",
        "logger=none",
        "test=false",
        "data.num_workers=0",
    ]
    run = run_vlr("train", *args, dir=run_dir)
    assert run.returncode == 0, run.output[-3000:]
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7


def test_a_corrupt_last_checkpoint_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    args = [
        "data.num_train=20",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=20",
        "trainer.max_epochs=1",
        "logger=none",
    ]
    run = run_vlr("train", *args, dir=run_dir)
    assert run.returncode == 1
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{run_dir / 'checkpoints' / 'last.ckpt'} is not a readable checkpoint" in errors[0]
    assert "resume=false" in errors[0]


def test_a_checkpoint_that_cannot_be_written_stops_the_run_at_once(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint folder should be")  # unwritable even for root
    args = [
        "data.num_train=20",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=20",
        "trainer.max_epochs=2",
        "logger=none",
    ]
    run = run_vlr("train", *args, dir=run_dir)
    assert run.returncode == 1
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write checkpoint {run_dir / 'checkpoints'}/")
    assert not (run_dir / "metrics.json").exists()
    assert "Epoch 1" not in run.output  # it stopped at the first save, not after training on


def test_resume_false_starts_over(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "data.num_train=20",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=20",
        "trainer.max_epochs=1",
        "logger=csv",
        "test=false",
    ]
    first = run_vlr("train", *args, dir=run_dir)
    assert first.returncode == 0 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    again = run_vlr("train", *args, dir=run_dir)  # the same command resumes (and, its epoch done, trains no more)
    assert again.returncode == 0 and "resuming from" in again.output
    run = run_vlr("train", *args, "resume=false", dir=run_dir)
    assert run.returncode == 0 and "resuming from" not in run.output
