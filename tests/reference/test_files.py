import hashlib
import json

import numpy as np
import pytest
import torch

from vlr.reference import FeatureFileError, feature_dims, load_features, save_features


def test_safetensors_round_trip_and_meta(tmp_path):
    image, text = torch.randn(4, 6, dtype=torch.float64), torch.randn(8, 5)
    path = save_features(tmp_path, "val", image, text, {"image_encoder": "x"})
    save_features(tmp_path, "test", image[:2], text[:3], {"image_encoder": "x"})
    assert path == tmp_path / "val.safetensors" and not list(tmp_path.glob(".*tmp*"))
    got = load_features(tmp_path, "val", 4, 8)
    assert got["image"].dtype == torch.float32 and torch.allclose(got["image"], image.float())
    assert torch.equal(got["text"], text)
    meta = json.loads((tmp_path / "meta.json").read_text())
    counts = {split: {k: v for k, v in m.items() if k != "sha256"} for split, m in meta["splits"].items()}
    assert counts == {"val": {"images": 4, "captions": 8}, "test": {"images": 2, "captions": 3}}
    for split in ("val", "test"):  # the checksum load_features verifies
        assert (
            meta["splits"][split]["sha256"]
            == hashlib.sha256((tmp_path / f"{split}.safetensors").read_bytes()).hexdigest()
        )
    assert meta["image_encoder"] == "x"
    assert feature_dims(tmp_path) == (6, 5)


def test_npy_pair_is_read_and_dims_come_from_headers(tmp_path):
    np.save(tmp_path / "train_image.npy", np.ones((3, 4), dtype=np.float16))
    np.save(tmp_path / "train_text.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    assert feature_dims(tmp_path) == (4, 2)
    got = load_features(tmp_path, "train", 3, 6)
    assert got["image"].dtype == torch.float32 and got["image"].sum().item() == 12
    assert got["text"][5].tolist() == [10.0, 11.0]


def test_pickled_object_arrays_are_refused(tmp_path):
    np.save(tmp_path / "train_image.npy", np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    np.save(tmp_path / "train_text.npy", np.zeros((6, 2), dtype=np.float32))
    with pytest.raises(FeatureFileError, match=r"train_image\.npy: cannot be read without pickle"):
        load_features(tmp_path, "train", 3, 6)


@pytest.mark.parametrize(
    "image, text, message",
    [
        (
            np.zeros((3,), np.float32),
            np.zeros((6, 2), np.float32),
            r"train_image\.npy: expected a 2-D \[rows, dim\] array, got shape \(3,\)",
        ),
        (
            np.zeros((3, 4), np.int64),
            np.zeros((6, 2), np.float32),
            r"train_image\.npy: expected floating-point features, got torch.int64",
        ),
        (
            np.zeros((4, 4), np.float32),
            np.zeros((6, 2), np.float32),
            r"train_image\.npy: has 4 rows but split 'train' has 3 images",
        ),
        (np.zeros((3, 4), np.float32), np.full((6, 2), np.nan, np.float32), r"train_text\.npy: row 0 is not finite"),
    ],
)
def test_bad_arrays_name_the_file_and_the_problem(tmp_path, image, text, message):
    np.save(tmp_path / "train_image.npy", image)
    np.save(tmp_path / "train_text.npy", text)
    with pytest.raises(FeatureFileError, match=message):
        load_features(tmp_path, "train", 3, 6)


def test_safetensors_without_a_text_tensor(tmp_path):
    from safetensors.torch import save_file

    save_file({"image": torch.zeros(3, 4)}, str(tmp_path / "train.safetensors"))
    with pytest.raises(FeatureFileError, match=r"train\.safetensors: has no tensor \['text'\]; it holds \['image'\]"):
        feature_dims(tmp_path)


def test_a_feature_file_that_no_longer_matches_its_recorded_checksum_is_named(tmp_path):
    path = save_features(tmp_path, "val", torch.randn(3, 4), torch.randn(6, 5), {"image_encoder": "x"})
    assert load_features(tmp_path, "val", 3, 6)["image"].shape == (3, 4)
    other = tmp_path / "other"
    save_features(other, "val", torch.randn(3, 4), torch.randn(6, 5), {})
    path.write_bytes((other / "val.safetensors").read_bytes())  # replaced by other features of the same shape
    with pytest.raises(FeatureFileError, match=r"val.safetensors: does not match the checksum recorded in meta.json"):
        load_features(tmp_path, "val", 3, 6)
