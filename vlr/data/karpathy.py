"""Reader for Karpathy split files (``dataset_flickr30k.json``, ``dataset_coco.json``, ...).

Layout: ``images[] {filename, filepath?, split: train|val|test|restval, sentences[] {raw, tokens}}``;
optional per-image ``label`` (int) or ``labels`` (list of ints) become i2i ground truth.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from vlr.data.corpus import CaptionSplit
from vlr.errors import UserError

log = logging.getLogger(__name__)


class AnnotationError(UserError, ValueError):
    """An annotation file is missing, malformed or does not match the expected schema."""


def load_json(path: Path):
    if not path.exists():
        raise AnnotationError(f"annotation file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise AnnotationError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from None
    except json.JSONDecodeError as err:
        raise AnnotationError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None


def field(obj, key, where: str, path: Path, kind=None):
    if not isinstance(obj, dict) or key not in obj:
        raise AnnotationError(f"{path}: {where} has no field '{key}'")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        raise AnnotationError(f"{path}: {where}.{key} should be {kind.__name__}, got {type(value).__name__}")
    return value


MAX_CAPTION_CHARS = 2000  # far beyond any real caption (COCO's longest is ~1,000 characters)


def check_caption(raw, where: str, path: Path, image_name: str) -> str:
    """The caption, stripped; a runaway one (a corrupted file can hold megabytes in one string)
    is cut to ``MAX_CAPTION_CHARS`` with a warning, so tokenising and ROUGE-L stay bounded."""
    if not isinstance(raw, str):
        raise AnnotationError(f"{path}: {where} should be str, got {type(raw).__name__}")
    if not raw.strip():
        raise AnnotationError(f"{path}: {where} is an empty caption ({image_name})")
    if len(raw) > MAX_CAPTION_CHARS:
        log.warning(
            "%s: %s has %d characters; keeping the first %d (%s)", path, where, len(raw), MAX_CAPTION_CHARS, image_name
        )
        raw = raw[:MAX_CAPTION_CHARS]
    return raw.strip()


# the file gives no number of classes: a bound on any class index (a multi-hot row is that long,
# and a stray 2e9 would ask for a 250 GB label matrix); COCO has 80 classes, ImageNet-21k 21,841
MAX_CLASSES = 1_000_000


def check_label(value, where: str, path: Path) -> int:
    """A class index: a non-negative integer below `MAX_CLASSES` (a float would be truncated, a
    negative one would index from the end of the multi-hot row: both silently wrong i2i ground
    truth; a huge one would allocate a multi-hot matrix that never fits)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise AnnotationError(f"{path}: {where} should be a class index (an integer >= 0), got {value!r:.80}")
    if value >= MAX_CLASSES:
        raise AnnotationError(
            f"{path}: {where} should be a class index below {MAX_CLASSES:,} (at most that many classes), got {value}"
        )
    return value


def caption_tokens(sentence: dict, where: str, path: Path, image_name: str) -> list[str] | None:
    """The dataset's own word tokens of one caption (bounded like the caption itself), or None
    without a ``tokens`` field; an empty or malformed list is refused naming the caption."""
    if "tokens" not in sentence:
        return None
    toks = sentence["tokens"]
    if not isinstance(toks, list) or not toks or not all(isinstance(t, str) for t in toks):
        raise AnnotationError(
            f"{path}: {where}.tokens should be a non-empty list of words, got {toks!r:.80} ({image_name}); "
            "give the caption's tokens or drop the field"
        )
    return toks[: MAX_CAPTION_CHARS // 2]


def split_tokens(tokens: list[list[str] | None], captions: list[str], path: Path) -> list[list[str]] | None:
    """The split's word tokens (ROUGE-L relevance uses them): None when no caption has any; when
    only some lack them, those captions alone fall back to their lower-cased words, with a warning
    (before, one caption without tokens switched the whole split to raw captions)."""
    missing = [c for c, t in enumerate(tokens) if t is None]
    if len(missing) == len(tokens):
        return None
    if missing:
        log.warning("%s: %d captions have no tokens (first: caption %d, %r); their words are used instead",
                    path, len(missing), missing[0], captions[missing[0]])  # fmt: skip
    return [t if t is not None else re.findall(r"[a-z0-9]+", captions[c].lower()) or [captions[c]]
            for c, t in enumerate(tokens)]  # fmt: skip


def no_images_error(path: Path, split: str, present) -> AnnotationError:
    return AnnotationError(f"{path}: split '{split}' has no images (splits present: {sorted(present)})")


def read_karpathy(path: str | Path, image_root: str | Path, split: str, restval_to_train: bool = True) -> CaptionSplit:
    """One split of a Karpathy JSON; images resolve to ``image_root / filepath / filename``."""
    path, image_root = Path(path), Path(image_root)
    data = load_json(path)
    images = field(data, "images", "the top level", path, list)
    wanted = {split} | ({"restval"} if split == "train" and restval_to_train else set())
    paths: list[Path] = []
    captions: list[str] = []
    tokens: list[list[str] | None] = []
    t2i: list[int] = []
    labels: list[int | list[int]] = []
    scenes: list[list[dict]] = []
    for i, entry in enumerate(images):
        where = f"images[{i}]"
        if field(entry, "split", where, path, str) not in wanted:
            continue
        filename = field(entry, "filename", where, path, str)
        sentences = field(entry, "sentences", where, path, list)
        if not sentences:
            raise AnnotationError(f"{path}: {where} ({filename}) has no sentences")
        image_index = len(paths)
        paths.append(image_root / entry.get("filepath", "") / filename)
        for j, sent in enumerate(sentences):
            raw = field(sent, "raw", f"{where}.sentences[{j}]", path, str)
            captions.append(check_caption(raw, f"{where}.sentences[{j}].raw", path, filename))
            tokens.append(caption_tokens(sent, f"{where}.sentences[{j}]", path, filename))
            t2i.append(image_index)
        if isinstance(entry.get("objects"), list):  # the scene (vlr's synthetic data): scene relevance
            scenes.append([dict(o) for o in entry["objects"] if isinstance(o, dict)])
        if "label" in entry:
            labels.append(check_label(entry["label"], f"{where}.label", path))
        elif "labels" in entry:
            given = entry["labels"]
            if not isinstance(given, list) or not given:
                raise AnnotationError(
                    f"{path}: {where}.labels should be a non-empty list of class indices, got {given!r}"
                )
            labels.append([check_label(x, f"{where}.labels[{k}]", path) for k, x in enumerate(given)])
    if not paths:
        raise no_images_error(path, split, {e.get("split") for e in images if isinstance(e, dict)})
    label_tensor = _labels(labels, len(paths), path)
    return CaptionSplit(
        name=split,
        image_paths=paths,
        captions=captions,
        text_to_image=torch.tensor(t2i, dtype=torch.long),
        tokens=split_tokens(tokens, captions, path),
        labels=label_tensor,
        source=str(path),
        scenes=scenes if len(scenes) == len(paths) else None,
    )


def _labels(labels: list, n: int, path: Path) -> torch.Tensor | None:
    if not labels:
        return None
    if len(labels) != n:
        raise AnnotationError(f"{path}: only {len(labels)} of {n} images have a label; label all or none")
    if all(isinstance(x, int) for x in labels):
        return torch.tensor(labels, dtype=torch.long)
    num = 1 + max((max(x) if isinstance(x, list) and x else (x if isinstance(x, int) else -1)) for x in labels)
    out = torch.zeros(n, num, dtype=torch.bool)
    for i, x in enumerate(labels):
        out[i, x if isinstance(x, list) else [x]] = True
    return out
