"""The CSV history after a stop and a resume equals the uninterrupted run's (issue 29), in-process:
SIGTERM inside a validation (the checkpoint there would say the epoch was validated), SIGTERM
before any checkpoint, and ``max_steps`` then more steps."""

import os
import signal

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.test_run_bookkeeping import _assert_same_run, _csv_rows, _train, whole  # noqa: F401  (a fixture)

pytestmark = pytest.mark.slow  # two or three full runs each, as tests/test_run_bookkeeping.py's resumes


class TermInValidation(Callback):
    """Sends this process SIGTERM in the first batch of the first epoch-end validation."""

    def __init__(self, epoch: int = 0):
        self.epoch, self.sent = epoch, False

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


TERM_IN_VAL = (f"+callbacks.term._target_={__name__}.TermInValidation",)


def test_sigterm_inside_a_validation_resumes_to_the_same_history(tmp_path, whole, synthetic_root):  # noqa: F811
    resumed = tmp_path / "run"
    with pytest.raises(SystemExit) as stop:
        _train(resumed, synthetic_root, *TERM_IN_VAL, "+callbacks.term.epoch=1")
    assert stop.value.code == 143
    _train(resumed, synthetic_root)
    _assert_same_run(whole, resumed)  # epoch 1's validation row, best.ckpt, weights and W&B run included


def test_sigterm_before_any_checkpoint_starts_over_without_the_old_rows(tmp_path, whole, synthetic_root):  # noqa: F811
    resumed = tmp_path / "run"
    with pytest.raises(SystemExit):
        _train(resumed, synthetic_root, *TERM_IN_VAL, "callbacks.last_checkpoint.every_n_steps=0")
    assert not (resumed / "checkpoints" / "last.ckpt").exists() and _csv_rows(resumed)  # rows, nothing to resume
    _train(resumed, synthetic_root)
    assert _csv_rows(resumed) == _csv_rows(whole)


def _shape(rows):
    """Each row's step, epoch and which metrics it holds (values aside)."""
    return [(r["step"], r["epoch"], sorted(k for k, v in r.items() if v and k not in ("step", "epoch"))) for r in rows]


def test_max_steps_then_more_steps_logs_every_step_once(tmp_path, whole, synthetic_root):  # noqa: F811
    resumed = tmp_path / "run"
    _train(resumed, synthetic_root, "trainer.max_steps=5")
    _train(resumed, synthetic_root, "resume_allow_changes=[trainer.max_steps]")
    assert torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 8  # trained on
    # the schedule's length changed with max_steps, so values differ; every row is there, once
    assert _shape(_csv_rows(resumed)) == _shape(_csv_rows(whole))
