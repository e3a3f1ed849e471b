"""`vlr.runs` through `vlr.train.train`, in-process: a run stopped in the middle of an epoch (an
error, Ctrl-C, SIGTERM) and started again with the same configuration ends with the weights,
metrics, CSV history and W&B run of an uninterrupted one; every checkpoint carries the vlr
version and checkpoint format, and a checkpoint of another format is refused in one line."""

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.conftest import SYNTHETIC_ROOT_SPEC, job_config
from vlr import __version__
from vlr.callbacks import AtomicCheckpointIO
from vlr.runs import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint
from vlr.tracking.loggers import wandb_run_per_job
from vlr.train import train

STEPS_PER_EPOCH = 4  # trainer.limit_train_batches
LAST_EVERY = 3  # callbacks.last_checkpoint.every_n_steps


def compose_run(run_dir: Path, *overrides: str):
    return job_config(*overrides, run_dir=run_dir)


class StopAtStep(Callback):
    """Ends training right after optimizer step ``step`` (before `LastCheckpoint` could save it):
    with ``how=error`` as a crash would, or by sending this process Ctrl-C or SIGTERM."""

    def __init__(self, step: int, how: str):
        self.step, self.how = step, how

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.how == "error":
                raise RuntimeError(f"stopped at step {self.step}")
            os.kill(os.getpid(), getattr(signal, self.how))


def _train(run_dir: Path, synthetic_root: Path, *extra: str):
    overrides = [
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.batch_size=10",
        "data.num_workers=0",
        "trainer.max_epochs=2",
        f"+trainer.limit_train_batches={STEPS_PER_EPOCH}",
        f"callbacks.last_checkpoint.every_n_steps={LAST_EVERY}",
        "trainer.log_every_n_steps=1",  # a CSV row per step: rows logged after the checkpoint are dropped
        "logger=[csv,wandb]",
        "seed=3",
        *extra,
    ]
    with wandb_run_per_job():  # as vlr.train's main: the W&B run ends with the job
        return train(compose_run(run_dir, *overrides))


def _stopped(how: str, step: int) -> list[str]:
    return [
        f"+callbacks.stop._target_={__name__}.StopAtStep",
        f"+callbacks.stop.step={step}",
        f"+callbacks.stop.how={how}",
    ]


@pytest.fixture(scope="module")
def whole(tmp_path_factory, synthetic_root):
    run_dir = tmp_path_factory.mktemp("whole") / "run"
    value, metrics = _train(run_dir, synthetic_root)
    assert value == metrics["val/rsum"]
    return run_dir


def _csv_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_same_run(whole: Path, resumed: Path):
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    assert [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])] == []
    best_a = torch.load(whole / "checkpoints" / "best.ckpt", weights_only=True)
    best_b = torch.load(resumed / "checkpoints" / "best.ckpt", weights_only=True)
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(best_a["state_dict"][k], best_b["state_dict"][k]) for k in best_a["state_dict"])
    assert json.loads((whole / "metrics.json").read_text()) == json.loads((resumed / "metrics.json").read_text())
    assert _csv_rows(whole) == _csv_rows(resumed)
    run_id = (resumed / "wandb_run_id").read_text().strip()
    runs = sorted(p.name for p in (resumed / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.endswith(run_id) for r in runs)  # the resumed process continued it


@pytest.mark.slow
def test_a_run_that_died_mid_epoch_resumes_to_the_same_run(tmp_path, whole, synthetic_root):
    resumed = tmp_path / "run"
    with pytest.raises(RuntimeError, match="stopped at step 7"):
        _train(resumed, synthetic_root, *_stopped("error", 7))
    # the previous periodic save survives an error: mid-epoch 1, one step behind the logged rows
    last = read_checkpoint(resumed / "checkpoints" / "last.ckpt")  # stamped with this vlr's version and format
    assert last["global_step"] == 6 and last["RetrievalDataModule"] == {"epoch": 1, "trained_batches": 2}
    assert max(int(r["step"]) for r in _csv_rows(resumed)) == 6  # the row of step 7 was logged: dropped on resume
    assert not (resumed / "metrics.json").exists()
    _train(resumed, synthetic_root)  # the same configuration again
    _assert_same_run(whole, resumed)


@pytest.mark.slow
@pytest.mark.parametrize(("how", "status"), [("SIGINT", 130), ("SIGTERM", 143)], ids=["Ctrl-C", "SIGTERM"])
def test_a_stop_signal_saves_between_steps_and_exits_with_the_shells_status(
    tmp_path, whole, synthetic_root, capsys, how, status
):
    resumed = tmp_path / "run"
    # what Ctrl-C did before the run: Python's KeyboardInterrupt, or ignored in a process a
    # non-interactive shell started in the background (`make test &`)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as stop:
        _train(resumed, synthetic_root, *_stopped(how, 5))
    assert stop.value.code == status
    last = resumed / "checkpoints" / "last.ckpt"
    assert f"training stopped by a signal; {last} holds the state: run the same command to resume" in (
        capsys.readouterr().err
    )
    assert torch.load(last, weights_only=True)["global_step"] == 5  # saved at the stop, not a periodic save
    assert signal.getsignal(signal.SIGINT) is before  # Ctrl-C does what it did before the run
    if how == "SIGINT":  # both stop through the same path; resuming once is enough
        _train(resumed, synthetic_root)
        _assert_same_run(whole, resumed)


@pytest.mark.slow
def test_every_checkpoint_a_run_writes_carries_the_vlr_version_and_format(whole):
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = read_checkpoint(whole / "checkpoints" / name)
        assert (checkpoint["vlr_version"], checkpoint["vlr_checkpoint_format"]) == (__version__, CHECKPOINT_FORMAT)


@pytest.mark.parametrize(
    ("stamp", "written"),
    [
        ({}, "vlr unknown (checkpoint format 0)"),
        ({"vlr_version": "9.9", "vlr_checkpoint_format": 99}, "vlr 9.9 (checkpoint format 99)"),
    ],
    ids=["unstamped", "newer"],
)
def test_a_checkpoint_of_another_format_is_refused_naming_both_versions(tmp_path, stamp, written):
    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "global_step": 3, **stamp}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(err.value) == f"{path} was written by {written}; this is vlr {__version__} (format {CHECKPOINT_FORMAT})"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(2)}}, path)  # what vlr writes reads back
    assert read_checkpoint(path)["vlr_checkpoint_format"] == CHECKPOINT_FORMAT


def test_resuming_from_a_checkpoint_of_another_format_stops_before_any_step(tmp_path, synthetic_root):
    resumed = tmp_path / "run"
    (resumed / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "global_step": 3}, resumed / "checkpoints" / "last.ckpt")  # no stamp: format 0
    message = (
        f"{resumed / 'checkpoints' / 'last.ckpt'} was written by vlr unknown "
        f"(checkpoint format 0); this is vlr {__version__} (format {CHECKPOINT_FORMAT})"
    )
    with pytest.raises(CheckpointError) as err:
        _train(resumed, synthetic_root)
    assert str(err.value) == message
    assert not (resumed / "csv" / "metrics.csv").exists() and not (resumed / "metrics.json").exists()
