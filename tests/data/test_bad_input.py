"""Bad images and options: clear errors that name the file, or skipping that says what it skipped."""

import logging
import shutil

import pytest
import torch

from tests.data.test_datamodule import _dm
from vlr.data import RetrievalDataModule
from vlr.data.images import ImageLoadError


@pytest.fixture
def damaged_root(tmp_path, synthetic_root):
    """A copy of the synthetic data with one missing train image and one truncated val image."""
    root = tmp_path / "synthetic"
    shutil.copytree(synthetic_root, root)
    (root / "images" / "train_00002.png").unlink()
    val = root / "images" / "val_00001.png"
    val.write_bytes(val.read_bytes()[:200])
    return root


def _karpathy_dm(root, **kw):
    """The damaged copy read as plain Karpathy data (the synthetic source would regenerate it)."""
    from vlr.towers import build_tokenizer

    dm = RetrievalDataModule(
        name="x",
        source="karpathy",
        root=str(root),
        annotation="dataset_synthetic.json",
        image_size=64,
        num_workers=0,
        max_length=16,
        tokenizer=lambda captions: build_tokenizer(None, captions, vocab_size=200),
        **kw,
    )
    return dm


def test_missing_image_is_an_error_naming_the_file_before_training(damaged_root):
    with pytest.raises(
        ImageLoadError, match=r"1 of 60 train images cannot be used:\n  image file not found: .*train_00002\.png"
    ):
        _karpathy_dm(damaged_root).split("train")


def test_truncated_image_is_found_by_verify_and_named_when_loaded(damaged_root):
    dm = _karpathy_dm(damaged_root)
    loader = dm.val_dataloader()[0]
    with pytest.raises(ImageLoadError, match=r"cannot decode image .*val_00001\.png"):
        next(iter(loader))
    with pytest.raises(
        ImageLoadError, match=r"1 of 20 val images cannot be used:\n  cannot decode image .*val_00001\.png"
    ):
        _karpathy_dm(damaged_root, verify=True).split("val")


def test_skip_drops_bad_images_with_their_captions_and_says_so(damaged_root, caplog):
    caplog.set_level(logging.WARNING)
    dm = _karpathy_dm(damaged_root, on_bad_image="skip", verify=True)
    train, val = dm.split("train"), dm.split("val")
    assert (train.num_images, train.num_captions) == (59, 295)
    assert all(p.name != "train_00002.png" for p in train.image_paths)
    assert train.text_to_image.max() == 58 and torch.equal(train.text_to_image, torch.arange(59).repeat_interleave(5))
    assert val.num_images == 19
    text = caplog.text
    assert "train_00002.png" in text and "skipped 1 of 60 train images" in text
    assert "VAL IS NOT THE STANDARD VAL SPLIT" in text


def test_skip_replaces_an_undetected_bad_training_image_and_keeps_the_batch_full(damaged_root, caplog):
    (damaged_root / "images" / "train_00004.png").write_bytes(b"not a png")  # exists, so only decoding finds it
    dm = _karpathy_dm(damaged_root, on_bad_image="skip", batch_size=30, shuffle=False, augment=False)
    dm.trainer = None
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape[0] == 30
    # train_00002 was dropped up front, so train_00004 is image 3 with captions 15-19: each of
    # those items is served by the next loadable pair, caption 20
    assert dm.split("train").image_paths[3].name == "train_00004.png"
    assert batch["caption_idx"].tolist() == list(range(15)) + [20] * 5 + list(range(20, 30))
    assert 3 not in batch["image_idx"].tolist()
    assert "train_00004.png" in caplog.text


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("train_sampling", "pairs", r"data.train_sampling must be one of \('caption', 'image'\), got 'pairs'"),
        ("image_transform", "clip", r"data.image_transform must be one of \('builtin', 'tower'\), got 'clip'"),
        ("on_bad_image", "ignore", r"data.on_bad_image must be one of \('error', 'skip'\), got 'ignore'"),
    ],
)
def test_bad_options_are_named(synthetic_root, option, value, message):
    with pytest.raises(ValueError, match=message):
        _dm(synthetic_root, **{option: value})


def test_image_sampling_gives_one_item_per_image_with_one_of_its_captions(synthetic_root):
    dm = _dm(synthetic_root, batch_size=20, shuffle=False, augment=False, train_sampling="image")
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader.dataset) == 60
    seen, by_epoch = set(), {}
    for epoch in range(5):
        loader.sampler.set_epoch(epoch)
        batch = next(iter(loader))
        assert batch["image_idx"].tolist() == list(range(20))
        assert (batch["caption_idx"] // 5).tolist() == list(range(20))  # a caption of that image
        seen |= set(batch["caption_idx"].tolist())
        by_epoch[epoch] = batch["caption_idx"].tolist()
    assert len(seen) > 40  # captions are drawn afresh each epoch...
    loader.sampler.set_epoch(3)
    assert next(iter(loader))["caption_idx"].tolist() == by_epoch[3]  # ...as a function of (seed, epoch, item)


def test_imbalance_weakens_training_data_only(synthetic_root):
    from vlr.imbalance import Imbalance

    dm = _dm(
        synthetic_root,
        batch_size=20,
        shuffle=False,
        augment=False,
        imbalance=Imbalance(
            "both", 1.0, text={"attribute_omission": 1.0}, image={"occlusion": 0.25}, fewer_captions=0.5
        ),
    )
    dm.setup("fit")
    train = dm.train_dataloader()
    assert len(train.dataset) == 60 * 3  # ceil(0.5 * 5) captions per image
    item = train.dataset[0]
    assert not set(item["caption"].split()) & {"red", "green", "blue", "yellow", "purple", "orange", "left", "right"}
    clean = _dm(synthetic_root, augment=False)
    x_clean = clean.val_dataloader()[0].dataset[0]["image"]
    assert torch.equal(dm.val_dataloader()[0].dataset[0]["image"], x_clean)  # eval untouched
    assert dm.split("val").captions == clean.split("val").captions
    grey = (
        item["image"] * torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        + torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    )
    assert ((grey - 128 / 255).abs() < 0.01).all(dim=0).float().mean() > 0.2  # the grey square


FIXTURE_SPEC = ["data.num_train=60", "data.num_val=20", "data.num_test=20", "data.generator_seed=3"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_image", r"error: 1 of 60 train images cannot be used:\n  image file not found: .*train_00002\.png"),
        ("corrupt_in_worker", r"error: cannot decode image .*val_00001\.png: "),
    ],
)
def test_cli_ends_with_one_clear_message_and_no_metrics(tmp_path, damaged_root, damage, message):
    import re

    from tests.conftest import run_vlr

    if damage != "missing_image":  # put a train image back; val_00001.png stays truncated
        shutil.copy(damaged_root / "images" / "train_00003.png", damaged_root / "images" / "train_00002.png")
    run_dir = tmp_path / "run"
    run = run_vlr(
        "train",
        f"data.root={damaged_root}",
        *FIXTURE_SPEC,
        "data.num_workers=1",
        "data.batch_size=20",
        "trainer.max_epochs=1",
        "logger=csv",
        dir=run_dir,
    )
    assert run.returncode == 1
    assert re.search(message, run.output), run.output[-2000:]
    assert not (run_dir / "metrics.json").exists()


@pytest.mark.slow
def test_training_images_that_fail_in_loader_workers_are_counted_in_the_run_summary(tmp_path, damaged_root):
    """Under skip, a training image that only decoding finds bad is replaced in a loader worker;
    each batch carries its count and the run totals them (`vlr.callbacks.SkippedImages`), also
    across a resume. train_00004.png is image 4, captions 20-24: each of those 5 items is replaced
    by the next loadable one, so one epoch over every caption replaces 5 draws."""
    import json

    from tests.conftest import run_vlr

    for name, good in (("train_00002.png", "train_00003.png"), ("val_00001.png", "val_00002.png")):
        shutil.copy(damaged_root / "images" / good, damaged_root / "images" / name)  # only train_00004 is bad
    (damaged_root / "images" / "train_00004.png").write_bytes(b"not a png")
    args = [f"data.root={damaged_root}", *FIXTURE_SPEC, "data.on_bad_image=skip", "data.num_workers=2"]
    args += ["data.batch_size=20", "logger=csv"]  # 300 captions: 15 full batches, every item drawn each epoch

    whole = run_vlr("train", *args, "trainer.max_epochs=2", dir=tmp_path / "whole")
    assert whole.returncode == 0, whole.output[-3000:]
    assert whole.metrics["data/skipped_images/train"] == 2 * 5
    assert whole.metrics["data/bad_samples/train"] == 0  # nothing left out up front: only decoding finds it

    first = run_vlr("train", *args, "trainer.max_epochs=1", dir=tmp_path / "resumed")
    assert first.returncode == 0, first.output[-3000:]
    assert first.metrics["data/skipped_images/train"] == 5
    again = run_vlr(
        "train", *args, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]", dir=tmp_path / "resumed"
    )
    assert again.returncode == 0, again.output[-3000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["data/skipped_images/train"] == 10
    # the same command once more: training is complete, Lightning skips the loop, and the total
    # is the checkpoint's
    done = run_vlr(
        "train", *args, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]", dir=tmp_path / "resumed"
    )
    assert done.returncode == 0, done.output[-3000:]
    assert json.loads((tmp_path / "resumed" / "metrics.json").read_text())["data/skipped_images/train"] == 10
