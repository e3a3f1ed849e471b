"""Torch datasets over a `CaptionSplit`: training pairs, and the two evaluation loaders.

Evaluation embeds unique images and all captions separately, each item carrying
its index in the split, so the evaluator can de-duplicate DistributedSampler padding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from vlr.data.corpus import CaptionSplit
from vlr.data.images import ImageLoadError, load_rgb

log = logging.getLogger(__name__)


def load_image(split: CaptionSplit, i: int, transform: Callable, degrade: Callable | None, cache: dict | None = None):
    """Image ``i`` of the split, weakened by ``degrade(image, i)`` (imbalance) before ``transform``.

    ``cache`` (a dict, ``data.cache_images``): the result is kept by index and served again; only
    for a deterministic transform (the degradation is seeded per image)."""
    if cache is not None and i in cache:
        return cache[i]
    image = load_rgb(split.image_paths[i])
    out = transform(image if degrade is None else degrade(image, i))
    if cache is not None:
        cache[i] = out
    return out


class TrainPairs(Dataset):
    """Training pairs (image, caption, image index, caption index).

    One item per (active) caption, or with ``per_image`` one item per image with one of its
    captions drawn at random each time (torch's RNG: seeded per worker and epoch by Lightning).
    ``skip_bad``: an image that fails to load is logged and the next item served instead,
    so a batch keeps its size (every DDP rank must gather equal shapes).
    ``paired_captions``: each item also carries ``pair_caption``, another (active) caption of
    the same image drawn at random (the caption itself when the image has no other), for
    caption-to-caption objectives such as CoVLR's consistency term.
    """

    def __init__(
        self,
        split: CaptionSplit,
        transform: Callable,
        degrade: Callable | None = None,
        per_image: bool = False,
        skip_bad: bool = False,
        seed: int = 0,
        paired_captions: bool = False,
        cache: dict | None = None,
    ):
        self.split, self.transform, self.degrade, self.skip_bad, self.seed = split, transform, degrade, skip_bad, seed
        self.cache = cache
        captions = split.active_captions if split.active_captions is not None else torch.arange(split.num_captions)
        self.captions = captions
        owners = split.text_to_image[captions]
        by_image = [captions[owners == i] for i in range(split.num_images)] if per_image or paired_captions else None
        self.captions_of = [c for c in by_image if len(c)] if per_image and by_image is not None else None
        self.image_captions = by_image if paired_captions else None

    def __len__(self) -> int:
        return len(self.captions) if self.captions_of is None else len(self.captions_of)

    def _caption(self, k: int) -> int:
        if self.captions_of is None:
            return int(self.captions[k])
        own = self.captions_of[k]
        return int(own[torch.randint(len(own), (1,))])

    def __getitem__(self, key):
        """``key`` is an index, or ``(index, epoch)`` from `EpochSampler`: then the item's random
        choices (augmentation, caption draw) come from a generator seeded by (seed, epoch, index),
        so they do not depend on loader workers, prefetching or a resume. Only the CPU generator
        is seeded (the one `fork_rng(devices=[])` restores): `torch.manual_seed` would also seed
        every accelerator's generator, which here costs more than loading the image (a stack
        trace per lazy CUDA/XPU/MTIA call) and would reset the training process's GPU RNG."""
        if not isinstance(key, (tuple, list)):
            return self._item(int(key))
        k, epoch = int(key[0]), int(key[1])
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(((self.seed * 1_000_003 + epoch) * 1_000_003 + k) % (2**63))
            return self._item(k)

    def _item(self, k: int):
        """Item ``k``; under ``data.on_bad_image=skip`` the next loadable one, and ``skipped``: 1
        when item ``k``'s own image failed and another item replaced it (this may run in a
        loader worker, whose logs and counters the run never sees, so the count travels with the
        batch)."""
        for attempt in range(len(self)):
            c = self._caption((k + attempt) % len(self))
            i = int(self.split.text_to_image[c])
            try:
                image = load_image(self.split, i, self.transform, self.degrade, self.cache)
            except ImageLoadError as err:
                if not self.skip_bad:
                    raise
                log.warning("skipping a training image (data.on_bad_image=skip): %s", err)
                continue
            item = {"image": image, "caption": self.split.captions[c], "image_idx": i, "caption_idx": c}
            if self.skip_bad:
                item["skipped"] = int(attempt > 0)
            if self.image_captions is not None:
                others = [int(o) for o in self.image_captions[i] if int(o) != c] or [c]
                item["pair_caption"] = self.split.captions[others[int(torch.randint(len(others), (1,)))]]
            return item
        raise ImageLoadError(f"no training image of {self.split.source} could be loaded")


class EvalImages(Dataset):
    def __init__(
        self, split: CaptionSplit, transform: Callable, degrade: Callable | None = None, cache: dict | None = None
    ):
        self.split, self.transform, self.degrade, self.cache = split, transform, degrade, cache

    def __len__(self) -> int:
        return self.split.num_images

    def __getitem__(self, i: int):
        return {"image": load_image(self.split, i, self.transform, self.degrade, self.cache), "image_idx": i}


class EvalCaptions(Dataset):
    def __init__(self, split: CaptionSplit):
        self.split = split

    def __len__(self) -> int:
        return self.split.num_captions

    def __getitem__(self, c: int):
        return {"caption": self.split.captions[c], "caption_idx": c}


class Collate:
    """Stacks images and tokenises captions (padded to the longest in the batch)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, items: list[dict]) -> dict:
        out: dict = {}
        if "image" in items[0]:
            out["images"] = torch.stack([it["image"] for it in items])
            out["image_idx"] = torch.tensor([it["image_idx"] for it in items], dtype=torch.long)
        for field, prefix in (("caption", ""), ("pair_caption", "pair_")):  # a batch's captions, and their pairs
            if field in items[0]:
                enc = self.tokenizer(
                    [it[field] for it in items],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                out[f"{prefix}input_ids"], out[f"{prefix}attention_mask"] = enc["input_ids"], enc["attention_mask"]
        if "caption" in items[0]:
            out["caption_idx"] = torch.tensor([it["caption_idx"] for it in items], dtype=torch.long)
        if "skipped" in items[0]:  # training items skipped for an image that could not be loaded
            out["skipped_images"] = sum(it["skipped"] for it in items)
        return out
