"""A non-finite loss stops the run naming the step and the term, or is skipped and counted."""

import lightning.pytorch as pl
import pytest
import torch

from tests.conftest import SYNTHETIC_ROOT_SPEC
from tests.test_config import _compose
from vlr.build import build_data_and_model


def _module_nan_at_second_step(tmp_path, monkeypatch, synthetic_root, skip):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    cfg = _compose([f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.num_workers=0", "data.batch_size=20"])
    pl.seed_everything(0)
    datamodule, module = build_data_and_model(cfg)
    module.nonfinite.skip = skip
    forward, calls = module.objective.forward, []

    def nan_once(*args, **kwargs):
        terms = forward(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            terms["itc_t2i"] = terms["itc_t2i"] * float("nan")
        return terms

    monkeypatch.setattr(module.objective, "forward", nan_once)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_progress_bar=False,
    )
    return datamodule, module, trainer


def test_nonfinite_loss_stops_naming_step_and_term(tmp_path, monkeypatch, synthetic_root):
    datamodule, module, trainer = _module_nan_at_second_step(tmp_path, monkeypatch, synthetic_root, skip=False)
    with pytest.raises(
        FloatingPointError,
        match=r"non-finite loss at step 1 \(epoch 0, batch 1\): itc_t2i=nan; "
        r"trainer.skip_nonfinite=true skips such steps",
    ):
        trainer.fit(module, datamodule=datamodule)


@pytest.mark.slow  # trains
def test_skip_nonfinite_skips_the_step_and_counts_it(tmp_path, monkeypatch, synthetic_root):
    datamodule, module, trainer = _module_nan_at_second_step(tmp_path, monkeypatch, synthetic_root, skip=True)
    trainer.fit(module, datamodule=datamodule)
    assert module.nonfinite.skipped == 1
    assert trainer.global_step == 4  # max_steps counts optimizer steps: the skipped batch took none
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert trainer.callback_metrics["train/skipped_nonfinite"] == 1.0
