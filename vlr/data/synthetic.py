"""The embedded default dataset: small scenes of coloured shapes with template captions.

Written in the Karpathy ``dataset_*.json`` layout (plus ``images/``) so the same
reader that loads Flickr30K and COCO loads it. Everything is a pure function of
the seed and the image's (split, index), so growing a split never changes the
images already in it. Each image records its objects (shape, colour, size,
position) and a scene-class ``label`` = (shape, colour) of its one large object,
so single-modal retrieval has ground truth and later imbalance settings can
control what captions say and what images show.

Versions (``SyntheticSpec.version``, ``data.generator_version``): 3, the default, draws 3-4
objects and captions that each name every object, so captions identify their image and t2t
retrieval has a real answer; 2 draws 1-3 objects and captions that each mention part of the
scene, so many captions are shared by several images (748 of 1,000 test captions have a twin).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock
from PIL import Image, ImageDraw

from vlr.data.synthetic_oracle import write_oracle_reference

log = logging.getLogger(__name__)
# The default, 3 (the study's benchmark): every caption names every object (3-4 per scene) with
# its colour and place, so a caption identifies its image (duplicate captions across images of a
# split: measured, recorded in the manifest, well under 1%). Version 2 (partial captions, most of
# them shared with another image) stays reproducible by its number (data.generator_version=2).
GENERATOR_VERSION = 3
VERSIONS = (2, 3)
ANNOTATION = "dataset_synthetic.json"
REFERENCE_DIR = "reference"  # oracle reference features (see vlr.data.synthetic_oracle)
SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 170),
    "orange": (245, 140, 30),
}
POSITIONS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "middle": (0.5, 0.5)}
POSITION_PHRASE = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
SIZES = {"large": 0.42, "small": 0.22}
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
REFERENCE_SPLIT_ID = 3  # the reference corpus: seeds no split uses
NUM_CLASSES = len(SHAPES) * len(COLOURS)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    position: str


def scene_label(obj: SceneObject) -> int:
    return SHAPES.index(obj.shape) * len(COLOURS) + list(COLOURS).index(obj.colour)


def sample_scene(
    rng: np.random.Generator, objects: tuple[int, int] = (1, 3), distinct_colours: bool = False
) -> list[SceneObject]:
    """One large object and small ones, ``objects`` = (fewest, most) in all, each in its own
    position: 1-3 in version 2, 3-4 in version 3. ``distinct_colours`` (version 3): no two
    objects share a colour, so a small object drawn over the large one (the middle position
    touches every other) never merges with it into one blob the captions would misdescribe."""
    n = int(rng.integers(objects[0], objects[1] + 1))
    positions = rng.permutation(list(POSITIONS))[:n]
    colours = [str(c) for c in rng.permutation(list(COLOURS))[:n]] if distinct_colours else None
    return [
        SceneObject(
            shape=str(rng.choice(SHAPES)),
            colour=colours[i] if colours else str(rng.choice(list(COLOURS))),
            size="large" if i == 0 else "small",
            position=str(positions[i]),
        )
        for i in range(n)
    ]


def render(objects: list[SceneObject], size: int, rng: np.random.Generator) -> Image.Image:
    background = tuple(int(c) for c in rng.integers(200, 256, 3))
    img = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(img)
    for obj in sorted(objects, key=lambda o: o.size != "large"):  # small objects drawn on top
        cx, cy = POSITIONS[obj.position]
        cx, cy = (cx + rng.uniform(-0.04, 0.04)) * size, (cy + rng.uniform(-0.04, 0.04)) * size
        r = SIZES[obj.size] * size / 2
        box = (cx - r, cy - r, cx + r, cy + r)
        colour = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(box, fill=colour)
        elif obj.shape == "square":
            draw.rectangle(box, fill=colour)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
        else:
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    noise = rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) + noise, 0, 255).astype(np.uint8))


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def caption_templates(objects: list[SceneObject]) -> list[str]:
    """Candidate captions; each mentions only attributes of objects in the scene."""
    big, rest = objects[0], objects[1:]
    out = [
        f"{_a(big.size)} {big.colour} {big.shape} {POSITION_PHRASE[big.position]}",
        f"there is {_a(big.colour)} {big.shape} in the picture",
        f"{_a(big.shape)} {POSITION_PHRASE[big.position]}",
        f"an image showing {_a(big.size)} {big.shape}",
        f"{_a(big.colour)} shape {POSITION_PHRASE[big.position]}",
        f"{len(objects)} shape{'s' if len(objects) > 1 else ''}, the biggest is {_a(big.colour)} {big.shape}",
    ]
    if rest:
        o = rest[0]
        out += [
            f"{_a(big.colour)} {big.shape} and {_a(o.size)} {o.colour} {o.shape}",
            f"{_a(big.shape)} next to {_a(o.colour)} {o.shape} {POSITION_PHRASE[o.position]}",
            f"a picture of {_a(o.colour)} {o.shape} and a bigger {big.shape}",
        ]
    else:
        out += [
            f"a single {big.colour} {big.shape} on a plain background",
            f"just one {big.shape}, coloured {big.colour}",
        ]
    return out


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def caption_templates_v3(objects: list[SceneObject], rng: np.random.Generator) -> list[str]:
    """Version 3: six phrasings, each naming every object's colour, shape and place (the small
    objects in a drawn order per caption), so the words of any one caption pin the scene down."""
    big, rest = objects[0], objects[1:]
    where = POSITION_PHRASE

    def smalls() -> list[SceneObject]:
        return [rest[int(i)] for i in rng.permutation(len(rest))]

    count, smaller = (("", "", "two", "three", "four")[n] for n in (len(objects), len(rest)))
    return [
        f"a large {big.colour} {big.shape} {where[big.position]} with "
        + _join([f"a small {o.colour} {o.shape} {where[o.position]}" for o in smalls()]),
        f"{count} shapes: " + _join([f"{_a(o.colour)} {o.shape} {where[o.position]}" for o in [big, *smalls()]]),
        f"the biggest shape is {_a(big.colour)} {big.shape} {where[big.position]}, next to "
        + _join([f"{_a(o.colour)} {o.shape} {where[o.position]}" for o in smalls()]),
        "a picture of "
        + _join([f"{_a(o.colour)} {o.shape} {where[o.position]}" for o in smalls()])
        + f" and a bigger {big.colour} {big.shape} {where[big.position]}",
        _join([f"{where[o.position]} {_a(o.colour)} {o.shape}" for o in [big, *smalls()]]),
        f"{_a(big.colour)} {big.shape} {where[big.position]} and {smaller} smaller shapes: "
        + _join([f"{o.colour} {o.shape} {where[o.position]}" for o in smalls()]),
    ]


def duplicate_caption_fraction(images: list[dict], split: str) -> float:
    """The fraction of ``split``'s captions whose exact text is also a caption of another image
    of the split (0 when captions identify their image)."""
    owners: dict[str, set[int]] = {}
    captions = [(e["imgid"], s["raw"]) for e in images if e["split"] == split for s in e["sentences"]]
    for imgid, raw in captions:
        owners.setdefault(raw, set()).add(imgid)
    shared = sum(1 for _, raw in captions if len(owners[raw]) > 1)
    return shared / max(1, len(captions))


@dataclass(frozen=True)
class SyntheticSpec:
    num_train: int = 1500
    num_val: int = 250
    num_test: int = 250
    seed: int = 0
    image_size: int = 64
    captions_per_image: int = 5
    version: int = GENERATOR_VERSION
    # images (with all their captions) of a disjoint set the references learn from
    # (``reference=learned``): drawn like the splits' but from their own seeds, never shown to a run
    reference_images: int = 0


REFERENCE_CORPUS = "reference_corpus"  # <root>/reference_corpus/{images/, captions.json}


def _entry(spec: SyntheticSpec, split: str, index: int, imgid: int, sentid: int, image_dir: Path) -> dict:
    rng = np.random.default_rng([spec.seed, SPLIT_IDS.get(split, REFERENCE_SPLIT_ID), index])
    objects = sample_scene(rng, (3, 4), distinct_colours=True) if spec.version == 3 else sample_scene(rng)
    filename = f"{'ref' if split == 'reference' else split}_{index:05d}.png"
    render(objects, spec.image_size, rng).save(image_dir / filename)
    templates = caption_templates_v3(objects, rng) if spec.version == 3 else caption_templates(objects)
    chosen = rng.choice(len(templates), size=min(spec.captions_per_image, len(templates)), replace=False)
    sentences = []
    for k, t in enumerate(chosen):
        raw = templates[int(t)]
        sentences.append({"raw": raw, "tokens": raw.replace(",", "").split(), "imgid": imgid, "sentid": sentid + k})
    return {
        "filename": filename,
        "filepath": "images",
        "split": split,
        "imgid": imgid,
        "sentids": [s["sentid"] for s in sentences],
        "sentences": sentences,
        "label": scene_label(objects[0]),
        "objects": [asdict(o) for o in objects],
    }


def write_reference_corpus(spec: SyntheticSpec, directory: Path) -> None:
    """``spec.reference_images`` images and all their captions (``captions.json``: a list of
    ``{"filename", "captions"}``), from the reference seeds: the data the learned references
    fit on, disjoint from every split. No labels or object lists are written."""
    (directory / "images").mkdir(parents=True)
    full = dataclasses.replace(spec, captions_per_image=6)  # every phrasing: more caption pairs to learn from
    rows = []
    for i in range(spec.reference_images):
        entry = _entry(full, "reference", i, i, 0, directory / "images")
        rows.append({"filename": entry["filename"], "captions": [s["raw"] for s in entry["sentences"]]})
    (directory / "captions.json").write_text(json.dumps(rows))


MANIFEST = "generator.json"
# files that say which vlr data preset a folder holds (the user probably meant that preset)
PRESET_HINTS = (
    ("dataset_flickr30k.json", "data=flickr30k"),
    ("dataset_coco.json", "data=coco"),
    ("dataset_flickr8k.json", "data=flickr8k"),
    ("captions_*2017.json", "data=coco_official"),
    ("annotations/captions_*2017.json", "data=coco_official"),
    ("coco_karpathy_*.json", "data=coco_lavis"),
    ("flickr30k_*.json", "data=flickr30k_lavis"),
)


def _is_vlr_manifest(manifest: dict) -> bool:
    """A manifest vlr's generator wrote: it carries the marker."""
    return manifest.get("generator") == "vlr.synthetic"


def _refuse_unmarked(root: Path, manifest: dict) -> None:
    """A ``generator.json`` without the marker: an earlier internal generator's folder, whose
    migration vlr no longer carries. Never touched: one error naming both versions."""
    from vlr.data.karpathy import AnnotationError

    raise AnnotationError(
        f"data.root={root} holds synthetic data from an earlier vlr generator ({MANIFEST} without the "
        f"'generator' marker, generator version {manifest.get('version', 'unknown')}); this vlr writes "
        f"generator version {GENERATOR_VERSION} manifests with the marker and does not read or delete that "
        "folder: choose another data.root, or delete it to regenerate"
    )


def _refuse_foreign(root: Path) -> None:
    """A non-empty folder without vlr's manifest is the user's: never touch it, say what it looks like."""
    hint = next((preset for pattern, preset in PRESET_HINTS if any(root.glob(pattern))), None)
    meant = f"; it looks like {hint} (data.root belongs to that preset)" if hint else ""
    from vlr.data.karpathy import AnnotationError

    raise AnnotationError(
        f"data.root={root} is not an empty folder and holds no vlr synthetic data ({MANIFEST} missing), "
        f"so the synthetic generator will not write there{meant}"
    )


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _read_manifest(root: Path) -> dict | None:
    path = root / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if isinstance(manifest, dict) and not _is_vlr_manifest(manifest) and "version" in manifest:
        _refuse_unmarked(root, manifest)
    return manifest if isinstance(manifest, dict) and _is_vlr_manifest(manifest) else None


def generate_synthetic(root: str | Path, spec: SyntheticSpec) -> Path:
    """Write the dataset under ``root`` unless an identical one is already there; returns the JSON path.

    vlr deletes and overwrites nothing here: ``root`` must be missing, empty, or vlr's own
    synthetic data of the same spec (its ``generator.json``). A folder of other files is the
    user's (say ``data.root`` pointing at Flickr30K without ``data=flickr30k``) and is
    refused, naming the preset it looks like; vlr data of another spec is refused too, so two
    runs with different settings never share (or delete) one folder. The default
    ``data.root`` has the spec in its name, so other settings get their own folder.

    Safe to call from several processes at once (DDP ranks): a file lock serialises
    them, and the dataset is built in a temporary folder and moved into place, so a
    reader never sees half a dataset.
    """
    from vlr.data.karpathy import AnnotationError

    root = Path(root)
    if spec.version not in VERSIONS:
        raise ValueError(f"data.generator_version={spec.version}: the synthetic generator has versions {VERSIONS}")
    wanted = {"generator": "vlr.synthetic", **asdict(spec)}

    def check_existing() -> bool:
        """True when the wanted data is there; raises for anything that is not vlr's or not this spec.
        False for nothing there, or for vlr's data of this spec whose files no longer match the
        checksums its manifest recorded (rebuilt, with a warning)."""
        if not root.exists():
            return False
        if not root.is_dir():
            raise AnnotationError(f"data.root={root} is a file, not a folder")
        manifest = _read_manifest(root)
        if manifest is None:
            if any(root.iterdir()):
                _refuse_foreign(root)
            return False
        # a field the manifest lacks is a difference too (no defaults read into older manifests)
        differs = {
            k: (manifest.get(k, "missing"), v) for k, v in asdict(spec).items() if manifest.get(k, "missing") != v
        }
        if differs:
            shown = ", ".join(f"{k} {old} (wanted {new})" for k, (old, new) in differs.items())
            raise AnnotationError(
                f"data.root={root} holds vlr synthetic data of another spec ({shown}); vlr does not delete it: "
                "choose another data.root (the default one is named after the spec), or delete that folder"
            )
        damaged = [name for name, digest in manifest.get("sha256", {}).items() if _digest(root / name) != digest]
        if damaged:
            log.warning(
                "synthetic data %s is damaged (%s differ from the recorded checksums); rebuilding it",
                root,
                ", ".join(damaged),
            )
            return False
        return True

    if check_existing():  # before taking the lock: nothing is written beside a folder that is not vlr's
        return root / ANNOTATION
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if check_existing():
            return root / ANNOTATION
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)  # our own leftover from a killed run of this process id
        (tmp / "images").mkdir(parents=True)
        images, imgid, sentid = [], 0, 0
        for split, count in (("train", spec.num_train), ("val", spec.num_val), ("test", spec.num_test)):
            for i in range(count):
                entry = _entry(spec, split, i, imgid, sentid, tmp / "images")
                images.append(entry)
                imgid += 1
                sentid += len(entry["sentences"])
        (tmp / ANNOTATION).write_text(json.dumps({"dataset": "synthetic", "images": images}))
        if spec.reference_images:
            write_reference_corpus(spec, tmp / REFERENCE_CORPUS)
        duplicates = {split: duplicate_caption_fraction(images, split) for split in SPLIT_IDS}
        log.info(
            "synthetic data (generator version %d): captions shared with another image: %s",
            spec.version,
            ", ".join(f"{split} {100 * f:.2f}%" for split, f in duplicates.items()),
        )
        wanted["duplicate_captions"] = duplicates
        write_oracle_reference(images, tmp / REFERENCE_DIR, SHAPES, COLOURS, POSITIONS)
        checked = [ANNOTATION, *(str(p.relative_to(tmp)) for p in sorted((tmp / REFERENCE_DIR).glob("*")))]
        checked += [f"{REFERENCE_CORPUS}/captions.json"] if spec.reference_images else []
        wanted["sha256"] = {name: _digest(tmp / name) for name in checked}
        (tmp / MANIFEST).write_text(json.dumps(wanted))  # last: its presence means "complete"
        if root.exists():  # empty, or vlr's own data of this spec found damaged above
            shutil.rmtree(root)
        os.replace(tmp, root)
    return root / ANNOTATION
