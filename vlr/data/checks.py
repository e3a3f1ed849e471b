"""Up-front image checks: ``data.verify`` (decode everything once) and ``data.on_bad_image``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from tqdm import tqdm

from vlr.data.corpus import CaptionSplit
from vlr.data.images import ImageLoadError, load_rgb
from vlr.errors import UserError

log = logging.getLogger(__name__)
BAD_IMAGE_POLICIES = ("error", "skip")


def find_bad_images(split: CaptionSplit, decode: bool) -> dict[int, str]:
    """Image index -> problem, for missing files (always) and undecodable ones (``decode``)."""
    bad = {}
    items = enumerate(split.image_paths)
    if decode:
        items = tqdm(items, total=split.num_images, desc=f"verifying {split.name} images", mininterval=2)
    for i, path in items:
        if not decode:
            if not path.is_file():
                bad[i] = f"image file not found: {path}"
            continue
        try:
            load_rgb(path)
        except ImageLoadError as err:
            bad[i] = str(err)
    return bad


def check_images(split: CaptionSplit, policy: str, decode: bool) -> CaptionSplit:
    """Raise on bad images (``error``) or drop them with their captions (``skip``), naming each one."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"data.on_bad_image must be one of {BAD_IMAGE_POLICIES}, got '{policy}'")
    bad = find_bad_images(split, decode)
    if not bad:
        return split
    if policy == "error":
        listed = "\n  ".join(list(bad.values())[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ImageLoadError(
            f"{len(bad)} of {split.num_images} {split.name} images cannot be used:\n  {listed}{more}\n"
            f"(data.on_bad_image=skip drops them with their captions)"
        )
    for problem in bad.values():
        log.warning("skipping %s image: %s", split.name, problem)
    log.warning("skipped %d of %d %s images (data.on_bad_image=skip)", len(bad), split.num_images, split.name)
    if split.name != "train":
        log.warning(
            "!! %s IS NOT THE STANDARD %s SPLIT: %d images were dropped, so its numbers are not comparable "
            "with published results !!",
            split.name.upper(),
            split.name.upper(),
            len(bad),
        )
    keep = [i for i in range(split.num_images) if i not in bad]
    if not keep:
        raise ImageLoadError(f"every {split.name} image is bad ({len(bad)}); nothing left to use")
    return split.keep_images(keep)


class ImageOutsideRoot(UserError, ValueError):
    """An annotation file points at an image outside ``data.root``."""


def check_contained(split: CaptionSplit, root: str | Path, allow_outside_root: bool) -> CaptionSplit:
    """Refuse image paths that leave ``data.root`` (``../``, an absolute ``filename``, a symlink
    out of the image folder): an annotation file then measures images nobody chose, silently.
    Symlinks are followed (`os.path.realpath`); ``data.allow_outside_root=true`` allows them."""
    if allow_outside_root:
        return split
    base = os.path.realpath(root)
    for i, path in enumerate(split.image_paths):
        if not isinstance(path, (str, os.PathLike)):
            continue  # an image inside a shard (vlr.data.shards): the shard spec chose its files
        real = os.path.realpath(path)
        if os.path.commonpath([base, real]) != base:
            raise ImageOutsideRoot(
                f"{split.source or split.name}: {split.name} image {i} ({path}) resolves to {real}, outside "
                f"data.root={root}; data.allow_outside_root=true allows it"
            )
    return split


def warn_shared_images(splits: dict[str, CaptionSplit]) -> None:
    """Warn, naming them, about images listed twice in a split or in two splits: a test image seen
    in training, or a duplicate in a gallery, changes what the numbers mean."""
    seen: dict[str, str] = {}
    for name, split in splits.items():
        counts: dict[str, int] = {}
        for path in split.image_paths:
            counts[str(path)] = counts.get(str(path), 0) + 1
        twice = [p for p, n in counts.items() if n > 1]
        if twice:
            log.warning(
                "%d image(s) listed more than once in the %s split, e.g. %s", len(twice), name, ", ".join(twice[:3])
            )
        shared = [(p, seen[p]) for p in counts if p in seen]
        if shared:
            log.warning(
                "%d image(s) of the %s split are also in the %s split, e.g. %s",
                len(shared),
                name,
                shared[0][1],
                ", ".join(p for p, _ in shared[:3]),
            )
        for p in counts:
            seen.setdefault(p, name)
