import json

import pytest
import torch

from vlr.data.karpathy import AnnotationError, read_karpathy


def _write(tmp_path, images):
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": images, "dataset": "x"}))
    return path


def _img(name, split, caps, **extra):
    return {
        "filename": name,
        "split": split,
        "sentences": [{"raw": c, "tokens": c.lower().split()} for c in caps],
        **extra,
    }


def test_reads_splits_restval_and_variable_captions(tmp_path):
    path = _write(
        tmp_path,
        [
            _img("a.jpg", "train", ["one", "two"], filepath="train2014"),
            _img("b.jpg", "restval", ["three", "four", "five", "six", "seven", "eight"]),
            _img("c.jpg", "test", ["nine"]),
        ],
    )
    train = read_karpathy(path, tmp_path, "train")
    assert [p.name for p in train.image_paths] == ["a.jpg", "b.jpg"]
    assert train.image_paths[0] == tmp_path / "train2014" / "a.jpg"
    assert train.text_to_image.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert train.tokens[2] == ["three"]
    assert read_karpathy(path, tmp_path, "train", restval_to_train=False).num_images == 1
    test = read_karpathy(path, tmp_path, "test")
    assert test.captions == ["nine"] and test.labels is None


def test_labels_single_and_multi(tmp_path):
    path = _write(tmp_path, [_img("a", "test", ["x"], label=2), _img("b", "test", ["y"], label=0)])
    assert read_karpathy(path, tmp_path, "test").labels.tolist() == [2, 0]
    path = _write(tmp_path, [_img("a", "test", ["x"], labels=[0, 3]), _img("b", "test", ["y"], labels=[1])])
    multi = read_karpathy(path, tmp_path, "test").labels
    assert multi.dtype == torch.bool and multi.tolist() == [[True, False, False, True], [False, True, False, False]]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", r"dataset_x.json: not valid JSON"),
        (json.dumps({"imgs": []}), r"dataset_x.json: the top level has no field 'images'"),
        (json.dumps({"images": [{"split": "test", "sentences": []}]}), r"images\[0\] has no field 'filename'"),
        (json.dumps({"images": [_img("a", "test", [])]}), r"images\[0\] \(a\) has no sentences"),
        (json.dumps({"images": [_img("a", "test", ["  "])]}), r"images\[0\].sentences\[0\].raw is an empty caption"),
        (
            json.dumps({"images": [_img("a", "train", ["x"])]}),
            r"split 'test' has no images \(splits present: \['train'\]\)",
        ),
        (json.dumps({"images": {"a": 1}}), r"images should be list, got dict"),
    ],
)
def test_schema_errors_name_file_and_path(tmp_path, content, message):
    path = tmp_path / "dataset_x.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_karpathy(path, tmp_path, "test")


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found: .*nope.json"):
        read_karpathy(tmp_path / "nope.json", tmp_path, "test")
