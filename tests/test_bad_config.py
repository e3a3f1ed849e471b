"""Bad options and input end with one line naming the option or file, before any training step."""

import logging

import numpy as np
import pytest
import torch

from tests.conftest import SYNTHETIC_ROOT_SPEC, run_vlr
from vlr.data import RetrievalDataModule
from vlr.data.checks import warn_shared_images
from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import MAX_CAPTION_CHARS, check_caption
from vlr.errors import ConfigError
from vlr.objectives import create_objective
from vlr.reference import FeatureFileError, FeatureReference, save_features


@pytest.mark.parametrize("value", [0, -4, 2.5, "64"])
def test_batch_size_must_be_a_positive_integer(synthetic_root, value):
    with pytest.raises(ConfigError, match=rf"data.batch_size must be a positive integer, got {value!r}"):
        RetrievalDataModule(name="s", source="synthetic", root=str(synthetic_root), batch_size=value)


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("infonce", {"temperature": -0.07}, "objective.temperature must be > 0, got -0.07"),
        ("infonce", {"weight": -1.0}, "objective.weight must be >= 0, got -1.0"),
        ("covlr", {"beta": -2}, "objective.beta must be >= 0, got -2"),
        ("covlr", {"relation_temperature": 0}, "objective.relation_temperature must be > 0, got 0"),
        ("sad", {"embed_dim": 8, "weights": {"kd": -2.0}}, "objective.weights.kd must be >= 0, got -2.0"),
    ],
)
def test_negative_loss_weights_and_temperatures_are_refused(name, options, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        create_objective(name, **options)


def test_an_evaluation_split_needs_two_images(tmp_path):
    from vlr.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path / "one"
    generate_synthetic(root, SyntheticSpec(num_train=4, num_val=1, num_test=2))
    dm = RetrievalDataModule(
        name="s",
        source="synthetic",
        root=str(root),
        num_train=4,
        num_val=1,
        num_test=2,
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(
        ConfigError, match=r"the val split of .* has 1 image\(s\); retrieval evaluation needs at least 2"
    ):
        dm.eval_targets("val")


def test_reference_features_of_another_width_in_one_split_are_named(tmp_path, synthetic_root):
    from vlr.data.karpathy import read_karpathy

    counts = {s: read_karpathy(synthetic_root / "dataset_synthetic.json", synthetic_root, s) for s in ("train", "val")}
    save_features(
        tmp_path, "train", torch.randn(counts["train"].num_images, 8), torch.randn(counts["train"].num_captions, 6), {}
    )
    save_features(
        tmp_path, "val", torch.randn(counts["val"].num_images, 9), torch.randn(counts["val"].num_captions, 6), {}
    )
    ref = FeatureReference(str(tmp_path))
    ref.prepare("train", counts["train"])
    with pytest.raises(
        FeatureFileError, match="split 'val' has image features of width 9 but another split's are 8 wide"
    ):
        ref.prepare("val", counts["val"])


def test_a_pickled_npy_is_refused_by_name(tmp_path, synthetic_root):
    from vlr.data.karpathy import read_karpathy
    from vlr.reference import load_features

    split = read_karpathy(synthetic_root / "dataset_synthetic.json", synthetic_root, "val")
    np.save(tmp_path / "val_image.npy", np.array([{"evil": 1}] * split.num_images, dtype=object), allow_pickle=True)
    np.save(tmp_path / "val_text.npy", np.zeros((split.num_captions, 4), np.float32))
    with pytest.raises(FeatureFileError, match=rf"{tmp_path / 'val_image.npy'}: cannot be read without pickle"):
        load_features(tmp_path, "val", split.num_images, split.num_captions)


def test_images_listed_twice_or_in_two_splits_are_named(caplog):
    def split(name, paths):
        return CaptionSplit(
            name=name, image_paths=paths, captions=["x"] * len(paths), text_to_image=torch.arange(len(paths))
        )

    with caplog.at_level(logging.WARNING):
        warn_shared_images(
            {"train": split("train", ["a.jpg", "b.jpg", "b.jpg"]), "test": split("test", ["c.jpg", "a.jpg"])}
        )
    assert "1 image(s) listed more than once in the train split, e.g. b.jpg" in caplog.text
    assert "1 image(s) of the test split are also in the train split, e.g. a.jpg" in caplog.text


def test_a_50_megabyte_caption_is_cut_with_a_warning(caplog, tmp_path):
    huge = "a dog " * (50 * 2**20 // 6)
    with caplog.at_level(logging.WARNING):
        kept = check_caption(huge, "images[0].sentences[0].raw", tmp_path / "d.json", "x.jpg")
    assert len(kept) <= MAX_CAPTION_CHARS and "images[0].sentences[0].raw has 52428798 characters" in caplog.text


def test_the_entry_point_reports_a_bad_batch_size_in_one_line(tmp_path, synthetic_root):
    run = run_vlr("train", f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.batch_size=0", "logger=none",
                  dir=tmp_path / "run")  # fmt: skip
    assert run.returncode == 1
    assert run.output.strip().splitlines()[-1] == "error: data.batch_size must be a positive integer, got 0"


def test_a_global_batch_that_the_ranks_cannot_share_is_refused(tmp_path, synthetic_root):
    """Checked on every rank when the loaders are set up, before any step (2 ranks here)."""
    from types import SimpleNamespace

    from tests.conftest import compose_config, small_run
    from vlr.build import build_data_and_model

    cfg = compose_config(*small_run(synthetic_root, "data.batch_size=7"), run_dir=tmp_path, root=tmp_path)
    dm = build_data_and_model(cfg)[0]
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    with pytest.raises(
        ConfigError,
        match=r"data.batch_size=7 is the global batch and must be divisible by the world size \(2 processes\)",
    ):
        dm.setup("fit")


def test_reference_features_without_a_path_is_one_line(tmp_path, synthetic_root):
    run = run_vlr(
        "train", "reference=features", f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "logger=none",
        dir=tmp_path / "run",
    )  # fmt: skip
    assert run.returncode == 1
    assert (
        run.output.strip().splitlines()[-1]
        == "error: reference=features needs reference.path=<directory of feature files>"
    )
