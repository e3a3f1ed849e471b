"""Write any split vlr reads as img2dataset-style tar shards (``python -m vlr.data.shards``).

One sample per image: ``<key>.<ext>`` holds the image file's own bytes (no re-encoding, so
training and evaluation decode the same pixels; formats other than jpg/png/webp are
written as lossless PNG), ``<key>.txt`` its first caption (what img2dataset readers
expect) and ``<key>.json`` every caption with its tokens and ids, the image's labels, scene, file
name and id, so
reading the shards back gives the same split. Tar headers carry no time or owner: the
same split always gives the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from vlr.data.corpus import CaptionSplit
from vlr.data.images import load_rgb
from vlr.data.shards.index import IMAGE_EXTENSIONS
from vlr.io import atomic_write


def _image_member(path) -> tuple[str, bytes]:
    suffix = Path(str(path)).suffix.lower().lstrip(".")
    if suffix in IMAGE_EXTENSIONS:
        return suffix, path.read_bytes()
    buffer = io.BytesIO()
    load_rgb(path).save(buffer, format="PNG")
    return "png", buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def write_split(split: CaptionSplit, out: Path, prefix: str, shard_size: int = 1000) -> list[Path]:
    """``out/<prefix>-000000.tar`` ..., ``shard_size`` images each; returns the shard paths."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out.mkdir(parents=True, exist_ok=True)
    captions_of: list[list[int]] = [[] for _ in range(split.num_images)]
    for c, i in enumerate(split.text_to_image.tolist()):
        captions_of[i].append(c)
    paths = []
    for first in range(0, split.num_images, shard_size):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(first, min(first + shard_size, split.num_images)):
                key = f"{i:09d}"
                ext, data = _image_member(split.image_paths[i])
                captions = [split.captions[c] for c in captions_of[i]]
                meta: dict = {
                    "key": key,
                    "image_id": str(i),
                    "file": Path(str(split.image_paths[i])).name,
                    "captions": captions,
                }
                if split.tokens is not None:
                    meta["tokens"] = [split.tokens[c] for c in captions_of[i]]
                if split.labels is not None:
                    meta["labels"] = split.labels[i].tolist()
                if split.scenes is not None:
                    meta["scene"] = split.scenes[i]
                if split.caption_ids is not None:
                    meta["caption_ids"] = [split.caption_ids[c] for c in captions_of[i]]
                _add(tar, f"{key}.{ext}", data)
                if captions:  # an image without captions (an imbalance's) has only its json
                    _add(tar, f"{key}.txt", captions[0].encode())
                _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode())
        path = out / f"{prefix}-{first // shard_size:06d}.tar"
        atomic_write(path, lambda f: f.write(buffer.getvalue()), what="shard")  # noqa: B023 -- called at once
        paths.append(path)
    return paths
