import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from vlr.data.karpathy import AnnotationError
from vlr.data.synthetic import (
    COLOURS,
    POSITION_PHRASE,
    SHAPES,
    SIZES,
    SceneObject,
    SyntheticSpec,
    generate_synthetic,
    scene_label,
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


def test_existing_data_of_the_same_spec_is_reused_and_another_spec_is_refused(tmp_path):
    root = tmp_path / "syn"
    generate_synthetic(root, SyntheticSpec(num_train=5, num_val=2, num_test=2))
    marker = root / "images" / "train_00000.png"
    mtime, before = marker.stat().st_mtime_ns, _digest(root)
    generate_synthetic(root, SyntheticSpec(num_train=5, num_val=2, num_test=2))
    assert marker.stat().st_mtime_ns == mtime
    with pytest.raises(AnnotationError, match=r"holds vlr synthetic data of another spec \(num_train 5 \(wanted 6\)\)"):
        generate_synthetic(root, SyntheticSpec(num_train=6, num_val=2, num_test=2))
    assert _digest(root) == before and marker.stat().st_mtime_ns == mtime  # nothing deleted or rewritten


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "files, hint",
    [
        ({"dataset_flickr30k.json": "{}", "flickr30k-images/1.jpg": "jpeg"}, "data=flickr30k"),
        ({"annotations/captions_val2017.json": "{}"}, "data=coco_official"),
        ({"notes.txt": "mine"}, None),
    ],
)
def test_a_folder_that_is_not_vlrs_is_never_modified(tmp_path, files, hint):
    root = tmp_path / "user-data"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    before = _tree(root)
    with pytest.raises(AnnotationError) as err:
        generate_synthetic(root, SyntheticSpec(num_train=3, num_val=2, num_test=2))
    message = str(err.value)
    assert f"data.root={root} is not an empty folder and holds no vlr synthetic data" in message
    assert (f"it looks like {hint}" in message) if hint else ("looks like" not in message)
    assert _tree(root) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user-data"]  # not even a lock file beside it


def test_an_empty_folder_is_filled(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    generate_synthetic(root, SyntheticSpec(num_train=3, num_val=2, num_test=2))
    assert (root / "dataset_synthetic.json").exists() and json.loads((root / "generator.json").read_text())[
        "generator"
    ] == "vlr.synthetic"


def test_the_cli_refuses_a_real_dataset_folder_and_leaves_it_alone(tmp_path):
    """`python -m vlr.train data.root=<Flickr30K>` without `data=flickr30k`: one line, nothing touched."""
    from tests.conftest import run_vlr

    root = tmp_path / "flickr30k"
    (root / "flickr30k-images").mkdir(parents=True)
    (root / "dataset_flickr30k.json").write_text('{"images": []}')
    (root / "flickr30k-images" / "1.jpg").write_bytes(b"\xff\xd8 not really")
    before = _tree(root)
    run = run_vlr("train", f"data.root={root}", "logger=none", dir=tmp_path / "run")
    assert run.returncode == 1
    errors = [line for line in run.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "it looks like data=flickr30k" in errors[0]
    assert _tree(root) == before


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
                assert (sims[a, b] > 1e-6) == bool(words[a] & words[b] & _train_vocab(data)), (
                    cs.captions[a],
                    cs.captions[b],
                )


def _train_vocab(data):
    return {w for e in data["images"] if e["split"] == "train" for s in e["sentences"] for w in s["tokens"]}


def test_damaged_synthetic_data_is_rebuilt_with_a_warning(tmp_path, caplog):
    import logging

    root = tmp_path / "syn"
    spec = SyntheticSpec(num_train=4, num_val=2, num_test=2)
    generate_synthetic(root, spec)
    good = (root / "dataset_synthetic.json").read_bytes()
    (root / "dataset_synthetic.json").write_bytes(good[: len(good) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="vlr.data.synthetic"):
        generate_synthetic(root, spec)
    assert f"synthetic data {root} is damaged (dataset_synthetic.json differ" in caplog.text
    assert (root / "dataset_synthetic.json").read_bytes() == good


def _phrase_objects(raw: str) -> list[tuple[str, str, str]]:
    """(colour, shape) of every object a version-3 caption names, parsed independently of the
    generator's templates: each colour word starts an object, whose shape is the next shape word."""
    words = raw.replace(",", " ,").split()
    found = []
    for i, w in enumerate(words):
        if w in COLOURS:
            shape = next(x for x in words[i + 1 :] if x in SHAPES)
            found.append((w, shape))
    return found


def test_version_3_captions_name_every_object_and_identify_their_image(tmp_path):
    from vlr.data.synthetic import duplicate_caption_fraction

    spec = SyntheticSpec(num_train=300, num_val=100, num_test=100, seed=4, version=3)
    data = json.loads(generate_synthetic(tmp_path / "v3", spec).read_text())
    for entry in data["images"]:
        objs = entry["objects"]
        assert 3 <= len(objs) <= 4 and len({o["position"] for o in objs}) == len(objs)
        assert len({o["colour"] for o in objs}) == len(objs)  # no two objects merge into one blob
        assert [o["size"] for o in objs] == ["large"] + ["small"] * (len(objs) - 1)
        assert len({s["raw"] for s in entry["sentences"]}) == 5
        for sent in entry["sentences"]:
            named = sorted(_phrase_objects(sent["raw"]))
            assert named == sorted((o["colour"], o["shape"]) for o in objs), (sent["raw"], objs)
            for o in objs:
                assert POSITION_PHRASE[o["position"]] in sent["raw"]
    # captions identify their image: recomputed here, and recorded in the manifest
    for split in ("train", "val", "test"):
        captions = [(e["imgid"], s["raw"]) for e in data["images"] if e["split"] == split for s in e["sentences"]]
        shared = sum(1 for i, raw in captions if any(j != i and r == raw for j, r in captions))
        assert shared / len(captions) == duplicate_caption_fraction(data["images"], split) < 0.01
    manifest = json.loads((tmp_path / "v3" / "generator.json").read_text())
    assert manifest["version"] == 3 and set(manifest["duplicate_captions"]) == {"train", "val", "test"}


def test_the_default_is_version_3_and_version_2_stays_reproducible(tmp_path, synthetic_root):
    """The default data (the code's and the config's) is the study's benchmark, version 3: no twin
    captions; version 2, by its number, still writes its partial, mostly shared captions."""
    from tests.conftest import compose_config
    from vlr.data.synthetic import duplicate_caption_fraction

    assert SyntheticSpec().version == 3 and compose_config().data.generator_version == 3
    session = json.loads((synthetic_root / "dataset_synthetic.json").read_text())["images"]  # the default spec
    assert all(duplicate_caption_fraction(session, split) < 0.01 for split in ("train", "val", "test"))
    spec = SyntheticSpec(num_train=60, num_val=20, num_test=20, seed=3, version=2)
    again = generate_synthetic(tmp_path / "v2", spec)
    assert again.read_text() == generate_synthetic(tmp_path / "v2-again", spec).read_text()
    images = json.loads(again.read_text())["images"]
    assert duplicate_caption_fraction(images, "train") > 0.3  # partial captions: many are shared
    with pytest.raises(ValueError, match=r"data.generator_version=4: the synthetic generator has versions \(2, 3\)"):
        generate_synthetic(tmp_path / "v4", SyntheticSpec(version=4))


def test_version_2_writes_what_it_wrote_before_version_3_existed(tmp_path):
    """Digests of a small version-2 dataset as written by a54f910 (the last commit before version 3):
    the default data, and every number measured on it, are unchanged."""
    root = tmp_path / "v2"
    annotation = generate_synthetic(root, SyntheticSpec(num_train=12, num_val=4, num_test=4, seed=7, version=2))
    images = hashlib.sha256()
    for path in sorted((root / "images").iterdir()):
        images.update(path.read_bytes())
    assert hashlib.sha256(annotation.read_bytes()).hexdigest().startswith("daeb30d77a1712979893d9bc2ca3a77e")
    assert images.hexdigest().startswith("946b825d7293e394d6bd9a1600ecdfd1")


def test_a_manifest_of_an_earlier_generator_is_one_error_naming_both_versions(tmp_path):
    """Manifests without the marker (the first version-2 folders) are no longer migrated: the folder
    is left as it is, and the error names its version and this generator's."""
    from vlr.data.synthetic import GENERATOR_VERSION

    root = tmp_path / "old"
    generate_synthetic(root, SyntheticSpec(num_train=3, num_val=2, num_test=2))
    manifest = json.loads((root / "generator.json").read_text())
    old = {k: manifest[k] for k in ("num_train", "num_val", "num_test", "seed", "image_size", "captions_per_image")}
    (root / "generator.json").write_text(json.dumps({**old, "version": 1}))
    before = _tree(root)
    both = rf"generator version 1\); this vlr writes generator version {GENERATOR_VERSION}"
    with pytest.raises(AnnotationError, match=both):
        generate_synthetic(root, SyntheticSpec(num_train=3, num_val=2, num_test=2))
    assert _tree(root) == before  # nothing read into a run, nothing deleted


def test_a_marked_manifest_missing_a_field_is_another_spec_not_a_default(tmp_path):
    """No field is read as its default (that was a migration of earlier manifests): a missing one
    is named, and the folder is left as it is."""
    root = tmp_path / "d"
    spec = SyntheticSpec(num_train=3, num_val=2, num_test=2)
    generate_synthetic(root, spec)
    manifest = json.loads((root / "generator.json").read_text())
    del manifest["version"]
    (root / "generator.json").write_text(json.dumps(manifest))
    before = _tree(root)
    with pytest.raises(AnnotationError, match=rf"another spec \(version missing \(wanted {spec.version}\)\)"):
        generate_synthetic(root, spec)
    assert _tree(root) == before


def test_the_reader_keeps_each_images_scene_for_scene_relevance(synthetic_root):
    from vlr.data.karpathy import read_karpathy
    from vlr.metrics import scene_relevance

    split = read_karpathy(synthetic_root / "dataset_synthetic.json", synthetic_root, "test")
    images = json.loads((synthetic_root / "dataset_synthetic.json").read_text())["images"]
    entries = [e for e in images if e["split"] == "test"]
    assert split.scenes == [e["objects"] for e in entries]
    rel = scene_relevance(split.scenes)
    assert bool((rel.diagonal() == 1.0).all()) and float(rel.max()) == 1.0
    assert {k for o in split.scenes[0] for k in o} == {"shape", "colour", "size", "position"}
