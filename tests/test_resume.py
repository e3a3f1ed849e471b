"""Fault tolerance: a run killed with SIGKILL in the middle of an epoch (or at the worst moments:
between two checkpoint writes, half-way through one) and started again with the same command
ends with the same weights and metrics as an uninterrupted run (bit-exact on CPU), continuing
the same W&B run; these need a real process to kill. Then, in-process: a mid-epoch max_steps
checkpoint, a corrupt or unwritable checkpoint, resume=false."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import REPO, run_cli

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
    "data.num_workers=2",
]  # augmentation and dropout on


def _kill_mid_epoch(tmp_path, run_dir, how=signal.SIGKILL):
    """Signals the run's whole process group (loader workers included) in the middle of the
    second epoch; returns the step of the last.ckpt it left. SIGKILL: it dies where it is;
    SIGTERM (a scheduler's stop): it saves between two steps and exits with status 143."""
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    errors = tmp_path / f"{run_dir.name}.stderr"  # a file, not a pipe nobody reads while it trains
    with open(errors, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err_file,
            start_new_session=True,
        )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
            try:
                step = torch.load(last, weights_only=True)["global_step"]
            except Exception:  # not written yet, or being written
                continue
            if step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH:  # in the middle of the second epoch
                os.killpg(proc.pid, how)
                proc.wait(timeout=300)
                err = errors.read_text()
                assert proc.returncode == (-signal.SIGKILL if how == signal.SIGKILL else 128 + how), err[-3000:]
                if how == signal.SIGTERM:
                    assert "training stopped by a signal" in err and "DataLoader worker" not in err, err[-3000:]
                return torch.load(last, weights_only=True)["global_step"]
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


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_run_resumes_to_the_same_weights_metrics_and_wandb_run(tmp_path, whole, how):
    """``data.num_workers=2``: a group SIGTERM reaches the loader workers too, which must leave
    stopping to the main process (vlr/data/workers.py)."""
    resumed = tmp_path / "resumed"
    killed_at = _kill_mid_epoch(tmp_path, resumed, how)
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
    # dies right after the first best.ckpt, before that epoch's last.ckpt (last.ckpt is then a
    # mid-epoch one); killed again while resuming, half-way through writing the resumed run's 3rd
    # last.ckpt ($TMPDIR on tmpfs). (A separate "dies after best.ckpt, then completes" case was its
    # first half: each fault's own assertions run after it.)
    "repeated": [{"VLR_TEST_DIE_AFTER": "best.ckpt:1"}, {"VLR_TEST_DIE_WRITING": "last.ckpt:3", "TMPDIR": "/dev/shm"}],
}


@pytest.mark.slow
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


# Ctrl-C and SIGTERM, and a run that died with an error, in-process: tests/test_run_bookkeeping.py


class StepRecorder(Callback):
    seen: list[int] = []

    def on_fit_start(self, trainer, pl_module):
        StepRecorder.seen = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        StepRecorder.seen.append(trainer.global_step)


RECORD_STEPS = (f"+callbacks.steps._target_={__name__}.StepRecorder",)


def _quick(run_dir, synthetic_root, *extra):
    """A few steps on `synthetic_root` (30 steps an epoch), in-process, as ``vlr.train`` would run them."""
    from tests.conftest import SYNTHETIC_ROOT_SPEC
    from tests.test_run_bookkeeping import compose_run
    from vlr.train import train

    overrides = [f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.batch_size=10", "data.num_workers=0"]
    return train(compose_run(run_dir, *overrides, "logger=none", *extra))


def test_max_steps_in_the_middle_of_an_epoch_leaves_a_checkpoint(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    _quick(run_dir, synthetic_root, "trainer.max_steps=7", "test=false", "+trainer.limit_val_batches=0")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7


def test_a_corrupt_last_checkpoint_stops_with_one_line(tmp_path, synthetic_root):
    from vlr.runs import CheckpointError

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError) as err:
        _quick(run_dir, synthetic_root, "trainer.max_epochs=1")
    message = str(err.value)
    assert message.startswith(f"resume (resume=false starts over)={run_dir / 'checkpoints' / 'last.ckpt'} is not a ")
    assert "is not a readable checkpoint" in message and "\n" not in message


def test_a_checkpoint_that_cannot_be_written_stops_the_run_at_once(tmp_path, synthetic_root):
    from vlr.io import SaveError

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoints").write_text("a file where the checkpoint folder should be")  # unwritable even for root
    with pytest.raises(SaveError, match=f"^cannot write checkpoint {run_dir / 'checkpoints'}/") as err:
        _quick(run_dir, synthetic_root, "trainer.max_epochs=2", "+trainer.limit_train_batches=2", *RECORD_STEPS)
    assert StepRecorder.seen == [1, 2]  # it stopped at the first save (epoch 0's end), not after training on
    assert "\n" not in str(err.value) and not (run_dir / "metrics.json").exists()


def test_resume_false_starts_over(tmp_path, synthetic_root, caplog):
    run_dir = tmp_path / "run"
    args = ("trainer.max_epochs=1", "+trainer.limit_train_batches=2", "test=false")
    _quick(run_dir, synthetic_root, *args)
    with caplog.at_level("INFO", logger="vlr.runs.resume"):
        _quick(run_dir, synthetic_root, *args)
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="vlr.runs.resume"):
        _quick(run_dir, synthetic_root, *args, "resume=false")
    assert "resuming from" not in caplog.text
