"""Image paths of an annotation file stay inside ``data.root`` unless ``data.allow_outside_root=true``
(issue 29): ``../``, an absolute ``filename`` and a symlink out of the image folder are refused in
one line naming the file and the image, through the datamodule as a run builds it."""

import json
import os

import pytest

from vlr.data.checks import ImageOutsideRoot
from vlr.data.datamodule import RetrievalDataModule


def _dataset(tmp_path, filename):
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.jpg").write_bytes(b"x")
    images = [
        {"filename": "a.jpg", "split": "test", "sentences": [{"raw": "a dog", "tokens": ["a", "dog"]}]},
        {"filename": filename, "split": "test", "sentences": [{"raw": "a cat", "tokens": ["a", "cat"]}]},
    ]
    (root / "dataset_x.json").write_text(json.dumps({"images": images}))
    return root


def _read(root, **options):
    dm = RetrievalDataModule(name="x", source="karpathy", root=str(root), annotation="dataset_x.json",
                             image_dir="images", **options)  # fmt: skip
    return dm.split("test")


def _outside(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"y")
    return tmp_path / "secret.jpg"


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_an_image_outside_data_root_is_refused(tmp_path, how):
    outside = _outside(tmp_path)
    filename = {"dotdot": "../../secret.jpg", "absolute": str(outside), "symlink": "link.jpg"}[how]
    root = _dataset(tmp_path, filename)
    if how == "symlink":
        os.symlink(outside, root / "images" / "link.jpg")
    with pytest.raises(ImageOutsideRoot) as err:
        _read(root)
    given = root / "images" / filename
    assert str(err.value) == (
        f"{root / 'dataset_x.json'}: test image 1 ({given}) resolves to {outside}, outside data.root={root}; "
        "data.allow_outside_root=true allows it"
    )
    assert _read(root, allow_outside_root=True).num_images == 2


def test_images_inside_data_root_pass(tmp_path):
    root = _dataset(tmp_path, "./a.jpg")
    assert _read(root).num_images == 2
