"""Fault tolerance, in one real-process test (processes are what it kills): one run folder, the
same command started again and again, each process interrupted in another way (dead right after
a checkpoint write, dead half-way through one, a group SIGTERM in the middle of an epoch with
loader workers, a group SIGKILL in the middle of an epoch), then completed: it ends with the same
weights and metrics as an uninterrupted run (bit-exact on CPU), continuing one W&B run. Then,
in-process: a mid-epoch max_steps checkpoint, a corrupt or unwritable checkpoint, resume=false."""

import contextlib
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

from tests.conftest import REPO

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
FAULT_INJECTION = REPO / "tests" / "fault_injection"  # its sitecustomize.py: VLR_TEST_DIE_AFTER, VLR_TEST_DIE_WRITING


def _start(cwd, run_dir, log, **env):
    """``python -m vlr.train ARGS hydra.run.dir=<run_dir>`` in ``cwd`` (``VLR_ROOT``), in a process
    group of its own (its loader workers with it), everything it prints to the file ``log`` (not a
    pipe nobody reads while it trains); ``env``: fault injection."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLR_ROOT": str(cwd), **env}
    full_env.pop("WANDB_SERVICE", None)  # never a wandb service this test process started
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"],
            cwd=cwd,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _last_step(run_dir):
    """The step of the run's last.ckpt, which must load: whole."""
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]


def _signal_mid_epoch(proc, run_dir, after, how, signalled):
    """Signals the run's whole process group once it has saved a last.ckpt past step ``after``
    in the middle of the second epoch (a resumed run starts from a checkpoint there already),
    creating the file ``signalled`` just before; returns the exit status. SIGKILL: it dies where
    it is; SIGTERM (a scheduler's stop): it saves between two steps and exits with status 143."""
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
        try:
            step = _last_step(run_dir)
        except Exception:  # not written yet
            continue
        if step > after and step > STEPS_PER_EPOCH and step % STEPS_PER_EPOCH:
            signalled.touch()  # on the checkpoints' clock: a file written after the signal is not older
            os.killpg(proc.pid, how)
            return proc.wait(timeout=300)
    pytest.fail(f"the run ended before it could be interrupted (exit status {proc.poll()})")


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
def test_a_run_interrupted_every_way_resumes_to_the_same_weights_metrics_and_wandb_run(tmp_path):
    """The same command, five times in one run folder (``every_n_steps=3``: last.ckpt at steps
    3, 6, ..., at each epoch's end, and when a stop signal stops it):

    1. dies (as if SIGKILLed) right after the first best.ckpt (epoch 0's validation), before that
       epoch's last.ckpt: the last.ckpt left is the mid-epoch one of step 18;
    2. resumes, and dies half-way through writing its 3rd last.ckpt (steps 20, 21, then 24),
       ``$TMPDIR`` on another filesystem (tmpfs): step 21's is left, whole;
    3. resumes, and its process group gets SIGTERM in the middle of epoch 1, its 2 loader workers
       included (which must leave stopping to the main process, vlr/data/workers.py): it saves
       between two steps and exits with 143;
    4. resumes, and its process group gets SIGKILL in the middle of epoch 1;
    5. resumes and completes, with everything an uninterrupted run of the same command (started
       with the first, in another folder) leaves, and one W&B run."""
    whole_root, root = tmp_path / "whole", tmp_path / "interrupted"
    whole_root.mkdir()
    root.mkdir()
    whole, resumed = whole_root / "run", root / "run"
    last = resumed / "checkpoints" / "last.ckpt"
    procs = []  # every process group started, killed in the end whatever happens

    def run(log, **env):
        proc = _start(root, resumed, root / log, **env)
        procs.append(proc)
        return proc

    def interrupted(log, status, expected, after):
        """The process that wrote ``log`` exited with ``expected``, leaving a whole last.ckpt past
        step ``after`` and before the end (its step returned), no metrics, the W&B run id kept."""
        out = (root / log).read_text()
        assert status == expected, out[-3000:]
        step = _last_step(resumed)
        assert after < step < 2 * STEPS_PER_EPOCH, out[-3000:]
        assert not (resumed / "metrics.json").exists()
        assert (resumed / "wandb_run_id").read_text().strip() == run_id
        return out, step

    inject = {"PYTHONPATH": f"{FAULT_INJECTION}:{os.environ.get('PYTHONPATH', '')}"}
    resuming = f"resuming from {last}"
    try:
        reference = _start(whole_root, whole, whole_root / "whole.log")  # meanwhile, in its own folder
        procs.append(reference)

        # 1. dies right after the first best.ckpt
        status = run("1-after-best.log", VLR_TEST_DIE_AFTER="best.ckpt:1", **inject).wait(timeout=600)
        run_id = (resumed / "wandb_run_id").read_text().strip()
        out, step = interrupted("1-after-best.log", status, 137, after=0)
        assert resuming not in out
        assert step == STEPS_PER_EPOCH - 2  # the epoch's last mid-epoch last.ckpt, not its end's

        # 2. dies half-way through writing a last.ckpt
        faults = dict(VLR_TEST_DIE_WRITING="last.ckpt:3", TMPDIR="/dev/shm", **inject)
        status = run("2-writing-last.log", **faults).wait(timeout=600)
        out, step = interrupted("2-writing-last.log", status, 137, after=step)
        assert resuming in out, out[-3000:]
        assert step == STEPS_PER_EPOCH + 1  # the one before the half-written one

        # 3. a group SIGTERM in the middle of an epoch, loader workers running
        signalled = root / "sigterm-sent"
        status = _signal_mid_epoch(run("3-sigterm.log"), resumed, step, signal.SIGTERM, signalled)
        out, step = interrupted("3-sigterm.log", status, 128 + signal.SIGTERM, after=step)
        assert resuming in out and "training stopped by a signal" in out, out[-3000:]
        assert "DataLoader worker" not in out, out[-3000:]
        assert last.stat().st_mtime_ns >= signalled.stat().st_mtime_ns  # saved as it stopped
        assert step % STEPS_PER_EPOCH

        # 4. a group SIGKILL in the middle of an epoch
        status = _signal_mid_epoch(run("4-sigkill.log"), resumed, step, signal.SIGKILL, root / "sigkill-sent")
        out, step = interrupted("4-sigkill.log", status, -signal.SIGKILL, after=step)
        assert resuming in out, out[-3000:]

        # 5. the same command completes
        status = run("5-completes.log").wait(timeout=600)
        out = (root / "5-completes.log").read_text()
        assert status == 0, out[-3000:]
        assert resuming in out, out[-3000:]
        assert reference.wait(timeout=600) == 0, (whole_root / "whole.log").read_text()[-3000:]
        _assert_same_run(whole, resumed)
        # every process continued the W&B run of the first: one offline-run folder each
        assert (resumed / "wandb_run_id").read_text().strip() == run_id
        runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
        assert len(runs) == 5 and all(r.endswith(run_id) for r in runs), runs
    finally:
        for proc in procs:  # nothing left running, loader workers included
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


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
