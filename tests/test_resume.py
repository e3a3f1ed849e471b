"""Fault tolerance: a run killed with SIGKILL in the middle of an epoch and started again with the
same command ends with the same weights and metrics as an uninterrupted run (bit-exact on CPU),
continuing the same W&B run."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import REPO, run_cli

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


def _kill_mid_epoch(tmp_path, run_dir):
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
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


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted reference run every kill test compares with."""
    tmp_path = tmp_path_factory.mktemp("whole")
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
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


def test_killed_run_resumes_to_the_same_weights_metrics_and_wandb_run(tmp_path, whole):
    resumed = tmp_path / "resumed"
    killed_at = _kill_mid_epoch(tmp_path, resumed)
    assert STEPS_PER_EPOCH < killed_at < 2 * STEPS_PER_EPOCH
    assert not (resumed / "metrics.json").exists()
    run_id = (resumed / "wandb_run_id").read_text().strip()
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={resumed}", cwd=tmp_path)  # the same command again
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {resumed / 'checkpoints' / 'last.ckpt'}" in proc.stdout + proc.stderr
    _assert_same_run(whole, resumed)
    # the resumed process continued the W&B run of the killed one
    assert (resumed / "wandb_run_id").read_text().strip() == run_id
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(run_id) for r in runs)


# each: the faults of successive runs of the same command, then one run that completes
FAULTS = {
    # dies right after the first best.ckpt, before that epoch's last.ckpt: last.ckpt is a mid-epoch one
    "between_best_and_last": [{"VLR_TEST_DIE_AFTER": "best.ckpt:1"}],
    # (a death half-way through writing last.ckpt, $TMPDIR on tmpfs, is the second fault of "repeated")
    # killed again while resuming: after best.ckpt, then mid-write of the resumed run's 3rd last.ckpt
    "repeated": [{"VLR_TEST_DIE_AFTER": "best.ckpt:1"}, {"VLR_TEST_DIE_WRITING": "last.ckpt:3", "TMPDIR": "/dev/shm"}],
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_kills_at_the_worst_moments_resume_to_the_same_run(tmp_path, whole, fault):
    resumed = tmp_path / "resumed"
    for faults in FAULTS[fault]:
        inject = {**faults, "PYTHONPATH": f"{REPO / 'tests' / 'fault_injection'}:{os.environ.get('PYTHONPATH', '')}"}
        proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={resumed}", cwd=tmp_path, env=inject)
        assert proc.returncode == 137, proc.stderr[-3000:]  # it really died there
        last = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)  # the previous one, whole
        assert 0 < last["global_step"] < 2 * STEPS_PER_EPOCH
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(whole, resumed)


# Ctrl-C only: its handler stops through Lightning's own SIGTERM handling (os.kill(SIGTERM)), the
# path an external SIGTERM takes; an external SIGTERM adds only the exit status (143)
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130)], ids=["Ctrl-C"])
def test_a_stop_signal_saves_between_steps_and_the_resumed_run_is_the_same(tmp_path, whole, signum, status):
    resumed = tmp_path / "resumed"
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={resumed}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = resumed / "checkpoints" / "last.ckpt"
    while proc.poll() is None:
        time.sleep(0.02)
        try:
            step = torch.load(last, weights_only=True)["global_step"]
        except Exception:
            continue
        if step > STEPS_PER_EPOCH + 3:
            proc.send_signal(signum)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == status, err[-3000:]
    assert "run the same command to resume" in err
    stopped = torch.load(last, weights_only=True)["global_step"]
    assert STEPS_PER_EPOCH + 3 < stopped < 2 * STEPS_PER_EPOCH and stopped % 3  # saved at the stop, not a periodic save
    assert not (resumed / "metrics.json").exists()
    proc = run_cli("vlr.train", *ARGS, f"hydra.run.dir={resumed}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli("vlr.train", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli("vlr.train", *args, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{run_dir / 'checkpoints' / 'last.ckpt'} is not a readable checkpoint" in errors[0]
    assert "resume=false" in errors[0] and "Traceback" not in proc.stderr


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
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli("vlr.train", *args, cwd=tmp_path)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write checkpoint {run_dir / 'checkpoints'}/")
    assert "Traceback" not in proc.stderr and not (run_dir / "metrics.json").exists()
    assert "Epoch 1" not in proc.stderr  # it stopped at the first save, not after training on


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
        f"hydra.run.dir={run_dir}",
    ]
    assert run_cli("vlr.train", *args, cwd=tmp_path).returncode == 0
    proc = run_cli("vlr.train", *args, "resume=false", cwd=tmp_path)
    assert proc.returncode == 0 and "resuming from" not in proc.stdout + proc.stderr
