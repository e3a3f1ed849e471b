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


def test_oracle_reference_encodes_what_each_modality_knows(synthetic_root):
    """Image rows: every object's attributes (independently recomputed); text rows: only the caption's words."""
    import torch

    from vlr.data.karpathy import read_karpathy
    from vlr.reference import load_features

    data = json.loads((synthetic_root / "dataset_synthetic.json").read_text())
    for split in ("train", "val", "test"):
        entries = [e for e in data["images"] if e["split"] == split]
        cs = read_karpathy(synthetic_root / "dataset_synthetic.json", synthetic_root, split)
        feats = load_features(synthetic_root / "reference", split, cs.num_images, cs.num_captions)
        shapes, colours, positions = list(SHAPES), list(COLOURS), ["left", "right", "top", "bottom", "middle"]
        for i, entry in enumerate(entries):
            want = np.zeros(4 + 6 + 24 + 5, dtype=np.float32)
            for o in entry["objects"]:
                w = 1.0 if o["size"] == "large" else 0.5
                s, c = shapes.index(o["shape"]), colours.index(o["colour"])
                want[s] += w
                want[4 + c] += w
                want[10 + 6 * s + c] += w
                want[34 + positions.index(o["position"])] += w
            assert np.allclose(feats["image"][i].numpy(), want), entry["objects"]
        # two captions share a text-feature direction only through shared words
        text = torch.nn.functional.normalize(feats["text"], dim=-1)
        words = [set(t) for t in cs.tokens]
        sims = text @ text.T
        for a in range(0, len(words), 7):
            for b in range(len(words)):
                assert (sims[a, b] > 1e-6) == bool(words[a] & words[b] & _train_vocab(data)), (cs.captions[a], cs.captions[b])


def _train_vocab(data):
    return {w for e in data["images"] if e["split"] == "train" for s in e["sentences"] for w in s["tokens"]}
