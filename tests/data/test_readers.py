"""The COCO captions and LAVIS list readers, on files generated here (real files: see the closing notes)."""

import json

import pytest

from vlr.data.coco_captions import read_coco_captions
from vlr.data.karpathy import AnnotationError
from vlr.data.lavis import read_lavis


def _coco(tmp_path, images, annotations, name="captions_val2017.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


def test_coco_captions_groups_by_image_in_file_order_and_skips_uncaptioned(tmp_path):
    path = _coco(
        tmp_path,
        [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}, {"id": 9, "file_name": "c.jpg"}],
        [
            {"image_id": 3, "caption": "b one "},
            {"image_id": 7, "caption": "a one"},
            {"image_id": 3, "caption": "b two"},
            {"image_id": 7, "caption": "a two"},
            {"image_id": 7, "caption": "a three"},
        ],
    )
    split = read_coco_captions(path, tmp_path / "val2017", "test")
    assert [p.name for p in split.image_paths] == ["a.jpg", "b.jpg"]  # c.jpg has no caption
    assert split.image_paths[0] == tmp_path / "val2017" / "a.jpg"
    assert split.captions == ["a one", "a two", "a three", "b one", "b two"]
    assert split.text_to_image.tolist() == [0, 0, 0, 1, 1] and split.labels is None


def test_coco_instances_give_multi_hot_labels(tmp_path):
    path = _coco(
        tmp_path,
        [{"id": 7, "file_name": "a.jpg"}, {"id": 3, "file_name": "b.jpg"}],
        [{"image_id": 7, "caption": "x"}, {"image_id": 3, "caption": "y"}],
    )
    inst = tmp_path / "instances_val2017.json"
    inst.write_text(
        json.dumps(
            {
                "categories": [{"id": 1}, {"id": 18}, {"id": 90}],
                "annotations": [
                    {"image_id": 7, "category_id": 18},
                    {"image_id": 7, "category_id": 18},
                    {"image_id": 3, "category_id": 1},
                    {"image_id": 3, "category_id": 90},
                    {"image_id": 99, "category_id": 1},
                ],
            }
        )
    )
    labels = read_coco_captions(path, tmp_path, "test", instances_path=inst).labels
    assert labels.tolist() == [[False, True, False], [True, False, True]]


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        ([{"id": 1}], [], r"images\[0\] has no field 'file_name'"),
        (
            [{"id": 1, "file_name": "a"}],
            [{"image_id": 2, "caption": "x"}],
            r"annotations\[0\].image_id=2 is not in images\[\]",
        ),
        (
            [{"id": 1, "file_name": "a"}],
            [{"image_id": 1, "caption": " "}],
            r"annotations\[0\].caption is an empty caption \(a\)",
        ),
        (
            [{"id": 1, "file_name": "a"}],
            [{"image_id": 1, "caption": 5}],
            r"annotations\[0\].caption should be str, got int",
        ),
        ([{"id": 1, "file_name": "a"}], [], r"split 'test' has no images with captions"),
    ],
)
def test_coco_schema_errors_name_the_json_path(tmp_path, images, annotations, message):
    with pytest.raises(AnnotationError, match=message):
        read_coco_captions(_coco(tmp_path, images, annotations), tmp_path, "test")


def test_lavis_eval_and_train_forms(tmp_path):
    test = tmp_path / "coco_karpathy_test.json"
    test.write_text(
        json.dumps(
            [
                {"image": "val2014/a.jpg", "caption": ["a1", "a2"]},
                {"image": "val2014/b.jpg", "caption": ["b1", "b2", "b3", "b4", "b5", "b6"]},
            ]
        )
    )
    split = read_lavis(test, tmp_path, "test")
    assert split.image_paths[1] == tmp_path / "val2014" / "b.jpg"
    assert split.text_to_image.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    train = tmp_path / "coco_karpathy_train.json"
    train.write_text(
        json.dumps(
            [
                {"image": "x.jpg", "caption": "x1", "image_id": "coco_1"},
                {"image": "y.jpg", "caption": "y1", "image_id": "coco_2"},
                {"image": "x.jpg", "caption": "x2", "image_id": "coco_1"},
            ]
        )
    )
    split = read_lavis(train, tmp_path, "train")
    assert split.captions == ["x1", "x2", "y1"] and split.text_to_image.tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "content, message",
    [
        (json.dumps({"images": []}), r"expected a list of \{image, caption\} entries, got dict"),
        (json.dumps([{"caption": ["a"]}]), r"\[0\] has no field 'image'"),
        (json.dumps([{"image": "a.jpg", "caption": []}]), r"\[0\].caption is an empty list \(a.jpg\)"),
        (json.dumps([{"image": "a.jpg", "caption": ["ok", ""]}]), r"\[0\].caption\[1\] is an empty caption"),
        (json.dumps([]), r"split 'test' has no images"),
    ],
)
def test_lavis_errors(tmp_path, content, message):
    path = tmp_path / "f.json"
    path.write_text(content)
    with pytest.raises(AnnotationError, match=message):
        read_lavis(path, tmp_path, "test")


def test_real_karpathy_test_captions_when_present():
    """The real COCO 5K / Flickr30K 1K test lists, if ../shared is there (skipped in CI)."""
    from tests.conftest import REPO

    root = REPO.parent / "shared" / "data" / "karpathy-test-captions"
    if not root.is_dir():
        pytest.skip("../shared/data not present")
    coco = read_lavis(root / "coco_test.json", root, "test")
    flickr = read_lavis(root / "flickr30k_test.json", root, "test")
    assert (coco.num_images, flickr.num_images, flickr.num_captions) == (5000, 1000, 5000)
    assert 25000 <= coco.num_captions <= 25020
