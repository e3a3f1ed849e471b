"""Inputs that change ground truth are checked as they are read (issue 29): labels are class
indices (a float was truncated, ``labels: [-1]`` marked the last class, a string crashed with a
bare ValueError), and one caption without tokens no longer switches the whole split's ROUGE-L
relevance to raw captions."""

import json

import pytest

from vlr.data.karpathy import AnnotationError, read_karpathy


def _write(tmp_path, images):
    path = tmp_path / "dataset_x.json"
    path.write_text(json.dumps({"images": images}))
    return path


def _img(name, caps, tokens=True, **extra):
    sentences = [{"raw": c, **({"tokens": c.lower().split()} if tokens else {})} for c in caps]
    return {"filename": name, "split": "test", "sentences": sentences, **extra}


@pytest.mark.parametrize(
    ("extra", "entry", "shown"),
    [
        ({"label": 1.7}, "images[1].label", "1.7"),
        ({"label": "3"}, "images[1].label", "'3'"),
        ({"label": -2}, "images[1].label", "-2"),
        ({"label": True}, "images[1].label", "True"),
        ({"labels": [0, -1]}, "images[1].labels[1]", "-1"),
        ({"labels": [0, 2.0]}, "images[1].labels[1]", "2.0"),
        ({"labels": ["a"]}, "images[1].labels[0]", "'a'"),
    ],
)
def test_a_label_that_is_not_a_class_index_is_refused_naming_the_entry(tmp_path, extra, entry, shown):
    key = next(iter(extra))
    path = _write(tmp_path, [_img("a", ["x"], **{key: [0] if key == "labels" else 0}), _img("b", ["y"], **extra)])
    with pytest.raises(AnnotationError) as err:
        read_karpathy(path, tmp_path, "test")
    assert str(err.value) == f"{path}: {entry} should be a class index (an integer >= 0), got {shown}"


@pytest.mark.parametrize("key", ["label", "labels"])
def test_a_class_index_out_of_range_is_refused_before_anything_is_allocated(tmp_path, key):
    """A multi-hot index of 2e9 asked for a 250 GB label matrix."""
    value = 2_000_000_000
    given = {key: [0, value] if key == "labels" else value}
    path = _write(tmp_path, [_img("a", ["x"], **{key: [0] if key == "labels" else 0}), _img("b", ["y"], **given)])
    with pytest.raises(AnnotationError) as err:
        read_karpathy(path, tmp_path, "test")
    entry = "images[1].labels[1]" if key == "labels" else "images[1].label"
    assert str(err.value) == (
        f"{path}: {entry} should be a class index below 1,000,000 (at most that many classes), got {value}"
    )
    path = _write(tmp_path, [_img("a", ["x"], labels=[0]), _img("b", ["y"], labels=[999_999])])
    assert read_karpathy(path, tmp_path, "test").labels.shape == (2, 1_000_000)  # the bound itself is a class


def test_empty_multi_hot_labels_are_refused(tmp_path):
    path = _write(tmp_path, [_img("a", ["x"], labels=[0]), _img("b", ["y"], labels=[])])
    with pytest.raises(AnnotationError, match=r"images\[1\]\.labels should be a non-empty list of class indices"):
        read_karpathy(path, tmp_path, "test")


def test_an_empty_token_list_is_refused_naming_the_caption(tmp_path):
    images = [_img("a", ["A dog runs"]), _img("b", ["Two cats", "A bird"])]
    images[1]["sentences"][1]["tokens"] = []
    path = _write(tmp_path, images)
    with pytest.raises(AnnotationError) as err:
        read_karpathy(path, tmp_path, "test")
    assert str(err.value) == (
        f"{path}: images[1].sentences[1].tokens should be a non-empty list of words, got [] (b); "
        "give the caption's tokens or drop the field"
    )


def test_one_caption_without_tokens_falls_back_alone(tmp_path, caplog):
    images = [_img("a", ["A dog runs"]), _img("b", ["Two cats", "A bird, flying!"])]
    del images[1]["sentences"][1]["tokens"]
    with caplog.at_level("WARNING", logger="vlr.data.karpathy"):
        split = read_karpathy(_write(tmp_path, images), tmp_path, "test")
    assert split.tokens == [["a", "dog", "runs"], ["two", "cats"], ["a", "bird", "flying"]]  # the others: their own
    assert "1 captions have no tokens (first: caption 2, 'A bird, flying!')" in caplog.text
    no_tokens = read_karpathy(_write(tmp_path, [_img("a", ["x"], tokens=False)]), tmp_path, "test")
    assert no_tokens.tokens is None  # a split without tokens: raw captions, as before
