"""VizWiz-Captions: official files (rejected and pre-canned captions dropped by default) and the
release's lists, with the same bad-input guarantees as the other readers."""

import json

import pytest

from tests.conftest import write_vizwiz
from vlr.data.karpathy import AnnotationError
from vlr.data.sources import SOURCES

ANNOTATIONS = {"train": "annotations/train.json", "val": "annotations/val.json"}
IMAGE_DIRS = {"train": "train", "val": "val"}


def _entries(prefix, n):
    return [
        {"filename": f"{prefix}_{i}.jpg", "sentences": [{"raw": f"{prefix} {i} caption {j}"} for j in range(5)]}
        for i in range(n)
    ]


@pytest.fixture
def vizwiz_root(tmp_path):
    (tmp_path / "images").mkdir()
    write_vizwiz(tmp_path / "vizwiz", _entries("VizWiz_train", 6), _entries("VizWiz_val", 4), tmp_path / "images")
    return tmp_path / "vizwiz"


def _source(root, **kw):
    return SOURCES.create("vizwiz", root=str(root), annotations=ANNOTATIONS, image_dirs=IMAGE_DIRS, **kw)


def test_rejected_and_precanned_captions_are_dropped_and_val_is_held_out_of_train(vizwiz_root):
    source = _source(vizwiz_root, val_images=2)
    train, val, test = (source.read(s) for s in ("train", "val", "test"))
    assert [p.name for p in train.image_paths] == [f"VizWiz_train_{i}.jpg" for i in range(4)]
    assert [p.name for p in val.image_paths] == ["VizWiz_train_4.jpg", "VizWiz_train_5.jpg"]
    assert [p.name for p in test.image_paths] == [f"VizWiz_val_{i}.jpg" for i in range(4)]
    assert test.image_paths[0] == vizwiz_root / "val" / "VizWiz_val_0.jpg"
    assert train.captions[:3] == ["VizWiz_train 0 caption 2", "VizWiz_train 0 caption 3", "VizWiz_train 0 caption 4"]
    assert train.num_captions == 4 * 3 and val.text_to_image.tolist() == [0, 0, 0, 1, 1, 1]
    assert not any("Quality issues" in c for s in (train, val, test) for c in s.captions)


def test_keeping_them_is_an_option(vizwiz_root):
    both = _source(vizwiz_root, val_images=2, drop_rejected=False, drop_precanned=False).read("test")
    assert both.num_captions == 4 * 5 and sum("Quality issues" in c for c in both.captions) == 4
    rejected = _source(vizwiz_root, val_images=2, drop_precanned=False).read("test")
    assert rejected.num_captions == 4 * 4


def test_an_image_whose_captions_are_all_dropped_goes_with_them(vizwiz_root):
    path = vizwiz_root / "annotations" / "val.json"
    data = json.loads(path.read_text())
    for ann in data["annotations"]:
        ann["is_rejected"] = ann["is_rejected"] or ann["image_id"] == 1
    path.write_text(json.dumps(data))
    test = _source(vizwiz_root, val_images=2).read("test")
    assert [p.name for p in test.image_paths] == ["VizWiz_val_0.jpg", "VizWiz_val_2.jpg", "VizWiz_val_3.jpg"]


def test_bad_input_is_named(vizwiz_root):
    with pytest.raises(AnnotationError, match=r"train\.json: data\.val_images=6 must be between 1 and the 5 train"):
        _source(vizwiz_root, val_images=6).read("train")
    path = vizwiz_root / "annotations" / "val.json"
    data = json.loads(path.read_text())
    del data["annotations"][3]["caption"]
    path.write_text(json.dumps(data))
    with pytest.raises(AnnotationError, match=r"val\.json: annotations\[3\] has no field 'caption'"):
        _source(vizwiz_root).read("test")
    path.write_text("{not json")
    with pytest.raises(AnnotationError, match=r"val\.json"):
        _source(vizwiz_root).read("test")


def test_the_release_lists_read_through_the_lavis_preset(tmp_path):
    from tests.test_config import _compose

    (tmp_path / "vizwiz_test.json").write_text(
        json.dumps([{"image": "val/VizWiz_val_00000772.jpg", "caption": ["a cassette tape", "a plastic case"]}])
    )
    cfg = _compose(["data=vizwiz_lavis", f"data.root={tmp_path}"])
    assert cfg.data.source == "lavis" and cfg.data.annotations.test == "vizwiz_test.json"
    source = SOURCES.create("lavis", root=str(tmp_path), annotations=dict(cfg.data.annotations), image_root="")
    test = source.read("test")
    assert test.image_paths == [tmp_path / "val" / "VizWiz_val_00000772.jpg"] and test.num_captions == 2


def test_an_unknown_vizwiz_option_is_an_error_not_ignored(vizwiz_root):
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['drop_rejectd'\]"):
        _source(vizwiz_root, drop_rejectd=False)
