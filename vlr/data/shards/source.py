"""``data.source=shards``: a split of tar shards as the `CaptionSplit` the rest of vlr reads.

The training split stays on disk: its images and captions are sequences that read one
member from its shard when indexed (`ShardImages`, `ShardCaptions`), so vlr's datasets,
sampler and loaders work on it unchanged and memory does not grow with the number of
samples. Validation and test splits are small galleries: their captions, tokens and labels
are read once into memory, as the evaluator and the ROUGE-L relevance want them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast, overload

import numpy as np
import torch

from vlr.data.corpus import CaptionSplit
from vlr.data.shards.index import JSON_CAPTION, JSON_LIST, ShardIndex, cached_index, read_member, resolve_shards
from vlr.errors import ConfigError


class ShardMember:
    """An image inside a shard: what `vlr.data.images.load_rgb` opens (``read_bytes``), and what
    error messages name (``str``: shard and member)."""

    __slots__ = ("shard", "offset", "size", "key", "name")

    def __init__(self, shard: str, offset: int, size: int, key: str, name: str | None = None):
        self.shard, self.offset, self.size, self.key = shard, offset, size, key
        self.name = name or key  # the image's file name where the shard recorded it (CxC matches by it)

    def read_bytes(self) -> bytes:
        return read_member(self.shard, self.offset, self.size)

    def is_file(self) -> bool:
        """The index found the member; a truncated shard fails when read, naming it."""
        return True

    def __str__(self) -> str:
        return f"{self.shard}, key {self.key}"

    def __repr__(self) -> str:
        return f"ShardMember({self})"


class ShardImages(Sequence):
    """The split's unique images, each a `ShardMember` made when indexed."""

    def __init__(self, index: ShardIndex, samples: np.ndarray, names: list[str] | None = None):
        self.shard_index, self.samples = index, samples  # samples[i]: the first sample showing image i
        self.names = names

    def __len__(self) -> int:
        return len(self.samples)

    @overload
    def __getitem__(self, i: int) -> ShardMember: ...
    @overload
    def __getitem__(self, i: slice) -> list[ShardMember]: ...
    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        s, ix = int(self.samples[i]), self.shard_index
        name = None if self.names is None else self.names[i]
        return ShardMember(
            ix.shards[int(ix.image_shard[s])], int(ix.image_offset[s]), int(ix.image_size[s]), str(ix.keys[s]), name
        )


def sample_texts(index: ShardIndex, s: int) -> tuple[list[str], dict]:
    """Sample ``s``'s captions and its json (empty when it has none)."""
    data = read_member(index.shards[int(index.text_shard[s])], int(index.text_offset[s]), int(index.text_size[s]))
    kind = int(index.text_kind[s])
    if kind == JSON_LIST:
        meta = json.loads(data)
        return list(meta["captions"]), meta
    if kind == JSON_CAPTION:
        meta = json.loads(data)
        return [meta["caption"]], meta
    return [data.decode("utf-8").strip()], {}


class ShardCaptions(Sequence):
    """Every caption of the split, read from its shard when indexed."""

    def __init__(self, index: ShardIndex):
        self.shard_index = index
        self.ends = np.cumsum(index.num_captions)  # caption c is in the sample whose end first exceeds c

    def __len__(self) -> int:
        return int(self.ends[-1])

    @overload
    def __getitem__(self, c: int) -> str: ...
    @overload
    def __getitem__(self, c: slice) -> list[str]: ...
    def __getitem__(self, c):
        if isinstance(c, slice):
            return [self[j] for j in range(*c.indices(len(self)))]
        c = int(c) + len(self) if int(c) < 0 else int(c)
        if not 0 <= c < len(self):
            raise IndexError(c)
        s = int(np.searchsorted(self.ends, c, side="right"))
        first = int(self.ends[s] - self.shard_index.num_captions[s])
        return sample_texts(self.shard_index, s)[0][c - first]


def split_from_index(index: ShardIndex, name: str, source: str, in_memory: bool) -> CaptionSplit:
    """The `CaptionSplit` of an index; ``in_memory`` reads every caption (and the tokens, caption
    ids, labels, scenes and file names vlr's own shards carry) now, else captions are read when used."""
    _, first_sample = np.unique(index.image_of, return_index=True)
    text_to_image = torch.from_numpy(np.repeat(index.image_of, index.num_captions))
    images = cast(list[Path], ShardImages(index, first_sample))  # a lazy sequence, read like the list
    if not in_memory:
        return CaptionSplit(name, images, cast(list[str], ShardCaptions(index)), text_to_image, source=source)
    captions: list[str] = []
    tokens: list[list[str]] | None = []
    metas = []
    for s in range(len(index)):
        texts, meta = sample_texts(index, s)
        captions.extend(texts)
        metas.append(meta)
        if tokens is not None and isinstance(meta.get("tokens"), list) and len(meta["tokens"]) == len(texts):
            tokens.extend(meta["tokens"])
        else:
            tokens = None
    firsts = [metas[s] for s in first_sample]  # one json per image: its labels, scene and file name
    labels = torch.tensor([m["labels"] for m in firsts]) if all("labels" in m for m in firsts) else None
    scenes = [m["scene"] for m in firsts] if all("scene" in m for m in firsts) else None
    names = [str(m["file"]) for m in firsts] if all("file" in m for m in firsts) else None
    caption_ids = None
    if all(isinstance(m.get("caption_ids"), list) for m in metas):
        caption_ids = [int(c) for m in metas for c in m["caption_ids"]]
        caption_ids = caption_ids if len(caption_ids) == len(captions) else None
    images = cast(list[Path], ShardImages(index, first_sample, names))
    return CaptionSplit(
        name,
        images,
        captions,
        text_to_image,
        tokens=tokens,
        labels=labels,
        source=source,
        scenes=scenes,
        caption_ids=caption_ids,
    )


class ShardsSource:
    """Tar shards per split (``data.splits``: brace patterns or globs under ``root``, or
    ``http(s)://`` URLs downloaded once into ``shard_cache``), indexed once and cached in
    ``index_cache`` (see `vlr.data.shards.index`)."""

    def __init__(
        self,
        root: str,
        splits: dict,
        on_bad_sample: str = "error",
        index_cache: str | None = None,
        shard_cache: str | None = None,
        annotation=None,
    ):
        # root stays a string: a URL (https://host/shards) is not a path
        self.root, self.splits, self.on_bad_sample = str(root), dict(splits), on_bad_sample
        self.index_cache, self.shard_cache = index_cache, shard_cache
        self.indexes: dict[str, ShardIndex] = {}

    def prepare(self) -> None:
        """Nothing to do: shards are written by `python -m vlr.data.shards` or img2dataset."""

    def index(self, split: str) -> ShardIndex:
        if split not in self.indexes:
            if not self.splits.get(split):
                raise ConfigError(f"data.splits has no shards for split '{split}' (it has {sorted(self.splits)})")
            shards = resolve_shards(self.splits[split], self.root, f"splits.{split}", self.shard_cache)
            self.indexes[split] = cached_index(shards, self.on_bad_sample, self.index_cache)
        return self.indexes[split]

    def bad_records(self, split: str) -> int:
        """Records of ``split`` the index left out (``on_bad_sample=skip``)."""
        return self.index(split).bad_samples

    def read(self, split: str) -> CaptionSplit:
        return split_from_index(self.index(split), split, f"shards {self.root}", in_memory=split != "train")
