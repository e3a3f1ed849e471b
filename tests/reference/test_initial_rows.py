"""``reference=frozen_init`` without a distilling objective: no copy of the towers, evaluation
rows embedded once with the towers as built, the same numbers as the copy gave."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from tests.conftest import SYNTHETIC_ROOT_SPEC, quiet_trainer
from tests.test_config import _compose
from vlr.build import build_data_and_model
from vlr.data.corpus import CaptionSplit
from vlr.errors import ConfigError
from vlr.reference import FrozenInitReference
from vlr.reference.lifecycle import ROWS_KEY
from vlr.reference.references import InitialEvalRows


def _build(root, objective="infonce", seed=0):
    cfg = _compose(
        [
            f"data.root={root}",
            *SYNTHETIC_ROOT_SPEC,
            "data.batch_size=10",
            "data.eval_batch_size=7",  # rows land across several batches
            "data.num_workers=0",
            "logger=none",
            "reference=frozen_init",
            f"objective={objective}",
        ]
    )
    pl.seed_everything(seed)
    return build_data_and_model(cfg)


def _fit_and_score(datamodule, module, ckpt_dir=None):
    callbacks = [] if ckpt_dir is None else [ModelCheckpoint(dirpath=ckpt_dir, save_last=True)]
    trainer = quiet_trainer(
        max_steps=3,
        limit_val_batches=1.0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        enable_checkpointing=ckpt_dir is not None,
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer.test(module, datamodule=datamodule, verbose=False)[0]


@pytest.mark.parametrize("objective, copied", [("infonce", False), ("triplet", False), ("covlr", True), ("sad", True)])
def test_only_distilling_objectives_hold_a_copy_of_the_towers(synthetic_root, objective, copied):
    _, module = _build(synthetic_root, objective)
    assert isinstance(module.reference, FrozenInitReference if copied else InitialEvalRows)
    reference_tensors = [k for k in module.state_dict() if k.startswith("reference.")]
    tower_tensors = len(module.encoder.image_tower.state_dict()) + len(module.encoder.text_tower.state_dict())
    assert len(reference_tensors) == (tower_tensors if copied else 0)


def test_rows_equal_the_copy_reference_and_travel_in_checkpoints(synthetic_root, tmp_path, caplog):
    datamodule, module = _build(synthetic_root)
    rows_metrics = _fit_and_score(datamodule, module, tmp_path / "ckpt")

    # the independent computation: the same run with a frozen copy of the towers, embedding every evaluation batch
    datamodule, copy_module = _build(synthetic_root)
    copy_module.reference = FrozenInitReference(copy_module.encoder)
    copy_metrics = _fit_and_score(datamodule, copy_module, tmp_path / "copy")
    for key in ("test/image/overlap@10", "test/text/overlap@10"):
        assert 0 < rows_metrics[key] < 100
        assert rows_metrics[key] == pytest.approx(copy_metrics[key], abs=1e-9), key
    assert rows_metrics == pytest.approx(copy_metrics, abs=1e-9)

    # evaluated later by a module whose towers were built from another seed: the checkpoint's rows win
    datamodule, fresh = _build(synthetic_root, seed=123)
    last = tmp_path / "ckpt" / "last.ckpt"
    assert ROWS_KEY == "vlr_reference_rows"  # the checkpoint entry's name, which checkpoints already written use
    assert set(torch.load(last, weights_only=True)[ROWS_KEY]) == {"val", "test"}
    trainer = quiet_trainer()
    again = trainer.test(fresh, datamodule=datamodule, ckpt_path=str(last), weights_only=True, verbose=False)[0]
    assert again["test/image/overlap@10"] == pytest.approx(rows_metrics["test/image/overlap@10"], abs=1e-9)
    assert again["test/rsum"] == pytest.approx(rows_metrics["test/rsum"], abs=1e-9)

    # a checkpoint holding a copy of the towers (another reference), scored by a module of the same seed:
    # the reference configured here (the towers as built) gives the rows, and the log says so
    copied = tmp_path / "copy" / "last.ckpt"
    assert any(k.startswith("reference.image_tower.") for k in torch.load(copied, weights_only=True)["state_dict"])
    assert ROWS_KEY not in torch.load(copied, weights_only=True)
    datamodule, fresh = _build(synthetic_root)
    with caplog.at_level("WARNING", logger="vlr.reference.lifecycle"):
        again = quiet_trainer().test(
            fresh, datamodule=datamodule, ckpt_path=str(copied), weights_only=True, verbose=False
        )
    assert "the checkpoint was written with another reference" in caplog.text
    assert not any(k.startswith("reference.") for k in fresh.state_dict())
    for key in ("test/image/overlap@10", "test/text/overlap@10", "test/rsum"):
        assert again[0][key] == pytest.approx(copy_metrics[key], abs=1e-9), key


def test_trained_towers_refuse_to_embed_a_new_split(synthetic_root):
    datamodule, module = _build(synthetic_root)
    _fit_and_score(datamodule, module)
    other = CaptionSplit("val", ["a.png", "b.png"], ["x", "y"], torch.tensor([0, 1]))
    with pytest.raises(ConfigError, match="rows of the 'val' split were not computed before the towers trained"):
        module.reference.precompute("val", other, datamodule.val_dataloader(), torch.device("cpu"))


def test_checkpoint_rows_of_other_data_do_not_replace_this_datas(synthetic_root):
    datamodule, module = _build(synthetic_root)
    datamodule.setup("test")
    split = datamodule.split("test")
    module.reference.precompute("test", split, datamodule.test_dataloader(), torch.device("cpu"))
    own = module.reference.rows_state()["test"]
    other = {"test": {**own, "fingerprint": "20x100:0123456789abcdef", "image": torch.zeros_like(own["image"])}}
    module.reference.load_rows_state(other)  # a checkpoint trained and scored on other data
    assert torch.equal(module.reference.rows_state()["test"]["image"], own["image"])
    assert module.reference.towers_trained  # the checkpoint's weights replace the towers next


def test_rows_of_other_pixels_are_not_reused(synthetic_root):
    """The fingerprint covers what evaluation feeds the towers: blurred evaluation images
    (``imbalance.apply_to_eval``) are other rows than clean ones of the same files."""
    fingerprints = []
    for extra in ([], ["imbalance=image_blur", "imbalance.strength=1.0", "imbalance.apply_to_eval=true"]):
        cfg = _compose(
            [
                f"data.root={synthetic_root}",
                *SYNTHETIC_ROOT_SPEC,
                "data.num_workers=0",
                "logger=none",
                "reference=frozen_init",
                "objective=infonce",
                *extra,
            ]
        )
        pl.seed_everything(0)
        datamodule, module = build_data_and_model(cfg)
        datamodule.setup("test")
        module.reference.precompute("test", datamodule.split("test"), datamodule.test_dataloader(), torch.device("cpu"))
        fingerprints.append(module.reference.rows_state()["test"]["fingerprint"])
    assert fingerprints[0] != fingerprints[1]
    assert fingerprints[0].split(":")[:2] == fingerprints[1].split(":")[:2]  # same files and captions
