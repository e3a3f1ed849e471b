"""The index of a split's tar shards: where every image and caption lives, as flat arrays.

Why an index: it keeps shards map-style (item k -> shard, byte offset, size), so vlr's
`EpochSampler`, per-item seeding and exact mid-epoch resume work on shards as on folders,
and no rank or worker ever waits for a shard of its own (there is no per-worker shard
split). It is webdataset's ``wids`` idea, written over the standard library's ``tarfile``
because the index must also hold what retrieval needs and ``wids`` does not keep: each
sample's caption count and image id (duplicates are positives), and a bad record named
by shard and key. Held as numpy arrays (a few bytes per sample), never the images or
captions themselves, so memory stays flat in the dataset's size.

The layout is img2dataset's: members ``<key>.<ext>`` grouped by key, an image
(``jpg|jpeg|png|webp``) with a ``txt`` caption and/or a ``json`` whose ``captions`` (a
list, as vlr writes) or ``caption`` (img2dataset) holds the text; ``image_id`` in the json
identifies the image (samples with one id are one image: positives of each other); a sample
without one is an image of its own, so no table of ids grows with a web-scale split.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import re
import tarfile
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlr.data.shards.download import download_shard, is_url
from vlr.errors import ConfigError, UserError
from vlr.io import atomic_write

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
BAD_SAMPLE_POLICIES = ("error", "skip")
INDEX_VERSION = 1
# where a caption's text is: the whole .txt member, json["caption"], or json["captions"][j]
TXT, JSON_CAPTION, JSON_LIST = 0, 1, 2


class BadSampleError(UserError):
    """A shard record that cannot be used (no image, no caption, bad json, truncated tar)."""


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> ``a-000.tar a-001.tar a-002.tar``; ``{x,y}`` alternatives too
    (webdataset's shard notation; zero padding follows the first bound)."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, body, tail = pattern[: match.start()], match.group(1), pattern[match.end() :]
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        lo, hi = numeric.groups()
        width = len(lo) if lo.startswith("0") else 0
        options = [str(n).zfill(width) for n in range(int(lo), int(hi) + 1)]
    else:
        options = body.split(",")
    return [out for option in options for out in expand_braces(head + option + tail)]


def resolve_shards(
    spec: str | list[str], root: str | Path, option: str, shard_cache: str | Path | None = None
) -> list[Path]:
    """The shard files of a split spec (brace patterns and globs, relative to ``root``), in order.
    A pattern or ``root`` that is an ``http(s)://`` URL names remote shards (brace patterns only):
    each is downloaded once into ``shard_cache`` (`vlr.data.shards.download`) and read from there."""
    patterns = [spec] if isinstance(spec, str) else list(spec)
    base = str(root)
    paths: list[Path] = []
    for pattern in patterns:
        for name in expand_braces(str(pattern)):
            if is_url(name) or (is_url(base) and not os.path.isabs(name)):
                url = name if is_url(name) else f"{base.rstrip('/')}/{name}"
                if glob.has_magic(url.split("?", 1)[0]):
                    raise ConfigError(
                        f"data.{option}: {url}: a glob cannot list remote shards; name them with a brace "
                        "pattern, e.g. train-{000000..000009}.tar"
                    )
                paths.append(download_shard(url, shard_cache, option))
                continue
            full = name if os.path.isabs(name) else str(Path(base) / name)
            found = sorted(glob.glob(full)) if glob.has_magic(full) else [full]
            if not found or not all(os.path.isfile(p) for p in found):
                missing = full if not found else next(p for p in found if not os.path.isfile(p))
                raise ConfigError(f"data.{option}: no shard file {missing} (pattern '{pattern}')")
            paths.extend(Path(p) for p in found)
    if not paths:
        raise ConfigError(f"data.{option} names no shards")
    return paths


@dataclass
class ShardIndex:
    """One split: ``shards`` (paths) and per-sample arrays. Sample s has its image at
    ``(image_shard[s], image_offset[s], image_size[s])`` and its text member at the ``text_*``
    entries; ``num_captions[s]`` captions; ``image_of[s]`` its image number (samples with one
    image id share it); ``keys[s]`` its key (for error messages)."""

    shards: list[str]
    keys: np.ndarray
    image_shard: np.ndarray
    image_offset: np.ndarray
    image_size: np.ndarray
    text_shard: np.ndarray
    text_offset: np.ndarray
    text_size: np.ndarray
    text_kind: np.ndarray
    num_captions: np.ndarray
    image_of: np.ndarray
    bad_samples: int = 0

    ARRAYS = (
        "keys",
        "image_shard",
        "image_offset",
        "image_size",
        "text_shard",
        "text_offset",
        "text_size",
        "text_kind",
        "num_captions",
        "image_of",
    )

    def __len__(self) -> int:
        return len(self.keys)

    def save(self, path: Path) -> None:
        arrays = {name: getattr(self, name) for name in self.ARRAYS}
        atomic_write(
            path,
            lambda f: np.savez(f, shards=np.array(self.shards), bad_samples=self.bad_samples, **arrays),
            what="shard index",
        )

    @classmethod
    def load(cls, path: Path) -> ShardIndex:
        with np.load(path) as data:
            return cls(
                shards=[str(s) for s in data["shards"]],
                bad_samples=int(data["bad_samples"]),
                **{name: data[name] for name in cls.ARRAYS},
            )


def read_member(shard: str, offset: int, size: int) -> bytes:
    """One member's bytes by position: a plain read, safe in any loader worker."""
    with open(shard, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"shard {shard} is truncated: a member at byte {offset} is cut short")
    return data


def _key_and_ext(name: str) -> tuple[str, str]:
    """webdataset's grouping: the key is the path up to the first dot of the base name."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _captions_in(shard: str, key: str, members: dict) -> tuple[tuple[int, int, int], int, str | None]:
    """(text member offset, size, kind), caption count and json image id (None: not given) of one sample."""
    if "json" in members:
        offset, size = members["json"]
        try:
            meta = json.loads(read_member(shard, offset, size))
        except (ValueError, UnicodeDecodeError) as err:
            raise BadSampleError(f"shard {shard}, key {key}: its .json does not parse ({err})") from None
        if not isinstance(meta, dict):
            raise BadSampleError(f"shard {shard}, key {key}: its .json is not an object")
        image_id = str(meta["image_id"]) if "image_id" in meta else None
        captions = meta.get("captions")
        if isinstance(captions, list) and captions and all(isinstance(c, str) and c.strip() for c in captions):
            return (offset, size, JSON_LIST), len(captions), image_id
        caption = meta.get("caption")
        if "txt" not in members and isinstance(caption, str) and caption.strip():
            return (offset, size, JSON_CAPTION), 1, image_id
    else:
        image_id = None
    if "txt" in members and members["txt"][1] > 0:
        return (*members["txt"], TXT), 1, image_id
    raise BadSampleError(
        f"shard {shard}, key {key}: no caption (a non-empty .txt, or .json with a non-empty 'caption'/'captions')"
    )


def _scan(shard: str):
    """(key, {ext: (offset, size)}) per sample, in tar order; raises on a corrupt tar."""
    current: str | None = None
    members: dict[str, tuple[int, int]] = {}
    with tarfile.open(shard, mode="r:") as tar:
        for info in tar:
            if not info.isfile():
                continue
            key, ext = _key_and_ext(info.name)
            if key != current:
                if current is not None:
                    yield current, members
                current, members = key, {}
            members[ext] = (info.offset_data, info.size)
    if current is not None:
        yield current, members


def build_index(shards: list[Path], on_bad_sample: str) -> ShardIndex:
    """Scan ``shards`` (headers, plus each sample's text member for its caption count and id).

    ``on_bad_sample``: ``error`` raises one line naming shard and key; ``skip`` leaves the
    record out and logs it, with the count."""
    if on_bad_sample not in BAD_SAMPLE_POLICIES:
        raise ConfigError(f"data.on_bad_sample must be one of {BAD_SAMPLE_POLICIES}, got '{on_bad_sample}'")
    keys: list[str] = []
    columns = {name: array("q") for name in ShardIndex.ARRAYS[1:]}  # 8 bytes a value, no Python objects
    explicit_ids: dict[str, int] = {}  # only json image_ids: a sample without one is its own image
    bad = num_images = 0

    def reject(problem: str) -> None:
        nonlocal bad
        if on_bad_sample == "error":
            raise BadSampleError(f"{problem} (data.on_bad_sample=skip leaves such records out)")
        bad += 1
        log.warning("skipping a shard record (data.on_bad_sample=skip): %s", problem)

    for n, shard_path in enumerate(shards):
        shard = str(shard_path)
        try:
            for key, members in _scan(shard):
                images = [ext for ext in IMAGE_EXTENSIONS if ext in members]
                if not images:
                    reject(f"shard {shard}, key {key}: no image member ({'|'.join(IMAGE_EXTENSIONS)})")
                    continue
                try:
                    text, count, image_id = _captions_in(shard, key, members)
                except BadSampleError as err:
                    reject(str(err))
                    continue
                if image_id is None or image_id not in explicit_ids:  # a new image, numbered in order
                    image_of, num_images = num_images, num_images + 1
                    if image_id is not None:
                        explicit_ids[image_id] = image_of
                else:
                    image_of = explicit_ids[image_id]
                keys.append(key)
                for name, value in zip(
                    ShardIndex.ARRAYS[1:], (n, *members[images[0]], n, *text, count, image_of), strict=True
                ):
                    columns[name].append(value)
        except (tarfile.TarError, EOFError, OSError) as err:
            reject(f"shard {shard} is corrupt after {len(keys)} usable records in all: {err}")
    if not keys:
        raise BadSampleError(f"no usable record in {len(shards)} shard(s), e.g. {shards[0]}")
    if bad:
        log.warning("left out %d bad shard record(s) of %d (data.on_bad_sample=skip)", bad, bad + len(keys))
    arrays = {name: np.frombuffer(values, dtype=np.int64).copy() for name, values in columns.items()}
    return ShardIndex([str(s) for s in shards], keys=np.asarray(keys, dtype=np.str_), bad_samples=bad, **arrays)


def cached_index(shards: list[Path], on_bad_sample: str, cache_dir: str | None) -> ShardIndex:
    """`build_index`, kept in ``cache_dir`` under a name made of the shards' paths, sizes and
    modification times (a changed shard is indexed again) and the policy."""
    if cache_dir is None:
        return build_index(shards, on_bad_sample)
    stamp = hashlib.sha1(
        repr(
            (INDEX_VERSION, on_bad_sample, [(str(s.resolve()), s.stat().st_size, s.stat().st_mtime_ns) for s in shards])
        ).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / "shards" / f"index-{stamp}.npz"
    if path.is_file():
        index = ShardIndex.load(path)
        if index.bad_samples:
            log.warning("left out %d bad shard record(s) (data.on_bad_sample=skip; index %s)", index.bad_samples, path)
        return index
    index = build_index(shards, on_bad_sample)
    index.save(path)
    return index
