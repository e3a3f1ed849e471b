"""Honest exits (issue 29), in-process: a run that trains zero steps, or ends with non-finite
weights, stops with one line instead of reporting random or NaN weights; with
``trainer.skip_nonfinite=true`` non-finite weights stop the run, and are never checkpointed."""

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from tests.runs.test_run_folder import _train
from vlr.models.nonfinite import MAX_SKIPS_IN_A_ROW
from vlr.runs.finite import NonFiniteError
from vlr.runs.stopping import NothingTrained


@pytest.mark.parametrize(
    "overrides",
    [("trainer.max_steps=0",), ("data.batch_size=400",)],  # 300 training captions: no full batch
    ids=["max_steps=0", "num_train<batch"],
)
def test_zero_training_steps_end_with_one_line(tmp_path, synthetic_root, overrides):
    run_dir = tmp_path / "run"
    with pytest.raises(NothingTrained) as err:
        _train(run_dir, synthetic_root, "test=true", *overrides)
    assert str(err.value).startswith("training ran zero optimizer steps (")
    assert "\n" not in str(err.value) and not (run_dir / "metrics.json").exists()


class PoisonWeights(Callback):
    """Makes one weight NaN after optimizer step ``step`` (as an overflowing update would)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


POISON = (f"+callbacks.poison._target_={__name__}.PoisonWeights", "+callbacks.poison.step=2")
LONGER = ("trainer.limit_train_batches=5",)


def test_skip_nonfinite_stops_once_the_weights_are_nan(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError) as err:
        _train(run_dir, synthetic_root, *LONGER, *POISON, "trainer.skip_nonfinite=true")
    message = str(err.value)
    assert message.startswith("the parameters are non-finite at step 2 (epoch 0, batch 2) (")
    assert "skipping steps cannot recover" in message and "\n" not in message
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()  # nothing NaN saved


def test_nan_weights_are_never_checkpointed(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="^the parameters are non-finite after step 2 .*keeps the last finite"):
        _train(run_dir, synthetic_root, *LONGER, *POISON, "trainer.skip_nonfinite=true",
               "callbacks.last_checkpoint.every_n_steps=1")  # fmt: skip
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 1 and all(torch.isfinite(t).all() for t in last["state_dict"].values())


def test_a_run_ending_with_nan_weights_is_not_reported(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    poison_last = (f"+callbacks.poison._target_={__name__}.PoisonWeights", "+callbacks.poison.step=2")
    with pytest.raises(NonFiniteError, match="^the parameters are non-finite after step 2 "):
        _train(run_dir, synthetic_root, *poison_last, "test=true")  # step 2 is the last: no later loss sees it
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "checkpoints" / "best.ckpt").exists()


class ScaleWeights(Callback):
    """After optimizer step ``step``, every parameter becomes ``value``: finite, but every output
    overflows (as after an update of 1e30), so every later loss is NaN."""

    def __init__(self, step: int, value: float):
        self.step, self.value = step, value

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(self.value)


def test_skip_nonfinite_stops_when_finite_weights_make_every_loss_nan(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    blow_up = (f"+callbacks.blow_up._target_={__name__}.ScaleWeights", "+callbacks.blow_up.step=1",
               "+callbacks.blow_up.value=1e30")  # fmt: skip
    with pytest.raises(NonFiniteError) as err:
        _train(run_dir, synthetic_root, "trainer.limit_train_batches=20", *blow_up, "trainer.skip_nonfinite=true")
    message = str(err.value)
    assert message.startswith(
        f"{MAX_SKIPS_IN_A_ROW} steps in a row had a non-finite loss (the last at step {MAX_SKIPS_IN_A_ROW} (epoch 0, "
        f"batch {MAX_SKIPS_IN_A_ROW}): "
    )
    assert "with finite parameters (largest |value| 1e+30): the model's outputs overflow" in message
    assert "\n" not in message and not (run_dir / "checkpoints" / "last.ckpt").exists()


class PoisonBuffer(Callback):
    """A floating-point buffer (as a BatchNorm's running variance) becomes NaN after step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            pl_module.encoder.register_buffer("running_var", torch.tensor([float("nan")]))


def test_nan_buffers_are_never_checkpointed(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    poison = (f"+callbacks.poison._target_={__name__}.PoisonBuffer", "+callbacks.poison.step=2")
    with pytest.raises(NonFiniteError, match=r"^the parameters are non-finite after step 2 \(encoder.running_var\)"):
        _train(run_dir, synthetic_root, *LONGER, *poison, "callbacks.last_checkpoint.every_n_steps=1")
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_nonfinite_embeddings_end_an_evaluation_in_one_line():
    from vlr.metrics import retrieval_metrics
    from vlr.metrics.retrieval import NonFiniteEmbeddings

    images = torch.eye(3)
    images[1, 0] = float("nan")
    with pytest.raises(NonFiniteEmbeddings) as err:
        retrieval_metrics(images, torch.eye(3), torch.arange(3))
    assert str(err.value) == (
        "image_emb has non-finite values (rows [1]...): the model's outputs overflowed; lower the learning rate, "
        "or evaluate an earlier checkpoint"
    )


def test_only_persistent_buffers_count_as_broken_weights():
    """A BatchNorm's overflowed running statistics are broken weights; a constant built with the
    module and kept out of its state dict (open_clip's causal mask: -inf above the diagonal) is not."""
    import torch

    from vlr.runs.finite import nonfinite_state

    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    module.register_buffer("attn_mask", torch.full((4, 4), float("-inf")).triu(1), persistent=False)
    assert nonfinite_state(module) == []
    module[1].running_var[0] = float("inf")
    assert nonfinite_state(module) == ["1.running_var"]
    module[0].weight.data[0, 0] = float("nan")
    assert nonfinite_state(module) == ["0.weight", "1.running_var"]
