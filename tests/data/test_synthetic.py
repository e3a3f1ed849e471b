import hashlib
import json

import numpy as np
from PIL import Image

from vlr.data.synthetic import (
    COLOURS,
    POSITION_PHRASE,
    SHAPES,
    SIZES,
    SyntheticSpec,
    generate_synthetic,
    scene_label,
    SceneObject,
)

ATTRIBUTE_WORDS = {
    "shape": set(SHAPES),
    "colour": set(COLOURS),
    "size": set(SIZES),
    "position": {p for p in POSITION_PHRASE},
}


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "generator.json":
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_generation_is_deterministic_and_prefix_stable(tmp_path):
    spec = SyntheticSpec(num_train=12, num_val=4, num_test=4, seed=7)
    a = generate_synthetic(tmp_path / "a", spec).parent
    b = generate_synthetic(tmp_path / "b", spec).parent
    assert _digest(a) == _digest(b)
    bigger = generate_synthetic(tmp_path / "c", SyntheticSpec(num_train=20, num_val=4, num_test=4, seed=7)).parent
    # growing a split leaves earlier images unchanged
    assert (a / "images/train_00003.png").read_bytes() == (bigger / "images/train_00003.png").read_bytes()
    other = generate_synthetic(tmp_path / "d", SyntheticSpec(num_train=12, num_val=4, num_test=4, seed=8)).parent
    assert _digest(a) != _digest(other)


def test_regenerates_only_when_spec_changes(tmp_path):
    root = tmp_path / "syn"
    generate_synthetic(root, SyntheticSpec(num_train=5, num_val=2, num_test=2))
    marker = root / "images" / "train_00000.png"
    mtime = marker.stat().st_mtime_ns
    generate_synthetic(root, SyntheticSpec(num_train=5, num_val=2, num_test=2))
    assert marker.stat().st_mtime_ns == mtime
    generate_synthetic(root, SyntheticSpec(num_train=6, num_val=2, num_test=2))
    assert len(list((root / "images").glob("train_*.png"))) == 6


def test_captions_mention_only_what_the_image_has(synthetic_root):
    data = json.loads((synthetic_root / "dataset_synthetic.json").read_text())
    assert {e["split"] for e in data["images"]} == {"train", "val", "test"}
    for entry in data["images"]:
        objs = entry["objects"]
        present = {kind: {o[kind] for o in objs} for kind in ATTRIBUTE_WORDS}
        assert len(entry["sentences"]) == 5
        assert len({s["raw"] for s in entry["sentences"]}) == 5
        for sent in entry["sentences"]:
            words = set(sent["raw"].replace(",", "").split())
            for kind, vocab in ATTRIBUTE_WORDS.items():
                assert words & vocab <= present[kind], (sent["raw"], objs)
            # the large object's shape or colour is always named
            assert words & {objs[0]["shape"], objs[0]["colour"]}
        big = SceneObject(**objs[0])
        assert big.size == "large" and entry["label"] == scene_label(big)
        img = Image.open(synthetic_root / entry["filepath"] / entry["filename"])
        assert img.size == (64, 64) and img.mode == "RGB"


def test_image_shows_the_large_objects_colour(synthetic_root):
    data = json.loads((synthetic_root / "dataset_synthetic.json").read_text())
    for entry in data["images"][:20]:
        big = entry["objects"][0]
        img = np.asarray(Image.open(synthetic_root / "images" / entry["filename"]), dtype=float)
        target = np.array(COLOURS[big["colour"]], dtype=float)
        close = (np.abs(img - target).max(axis=2) < 40).mean()
        assert close > 0.03, (entry["filename"], big, close)  # the large object covers several % of pixels
