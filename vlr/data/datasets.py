"""Torch datasets over a `CaptionSplit`: training pairs, and the two evaluation loaders.

Evaluation embeds unique images and all captions separately, each item carrying
its index in the split, so the evaluator can de-duplicate DistributedSampler padding.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset

from vlr.data.corpus import CaptionSplit
from vlr.data.images import load_rgb


def load_image(split: CaptionSplit, i: int, transform: Callable, degrade: Callable | None):
    """Image ``i`` of the split, weakened by ``degrade(image, i)`` (imbalance) before ``transform``."""
    image = load_rgb(split.image_paths[i])
    return transform(image if degrade is None else degrade(image, i))


class TrainPairs(Dataset):
    """One item per (active) caption: (image, caption, image index, caption index)."""

    def __init__(self, split: CaptionSplit, transform: Callable, degrade: Callable | None = None):
        self.split, self.transform, self.degrade = split, transform, degrade
        self.captions = split.active_captions

    def __len__(self) -> int:
        return self.split.num_captions if self.captions is None else len(self.captions)

    def __getitem__(self, k: int):
        c = k if self.captions is None else int(self.captions[k])
        i = int(self.split.text_to_image[c])
        image = load_image(self.split, i, self.transform, self.degrade)
        return {"image": image, "caption": self.split.captions[c], "image_idx": i, "caption_idx": c}


class EvalImages(Dataset):
    def __init__(self, split: CaptionSplit, transform: Callable, degrade: Callable | None = None):
        self.split, self.transform, self.degrade = split, transform, degrade

    def __len__(self) -> int:
        return self.split.num_images

    def __getitem__(self, i: int):
        return {"image": load_image(self.split, i, self.transform, self.degrade), "image_idx": i}


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
        if "caption" in items[0]:
            enc = self.tokenizer(
                [it["caption"] for it in items],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            out["input_ids"], out["attention_mask"] = enc["input_ids"], enc["attention_mask"]
            out["caption_idx"] = torch.tensor([it["caption_idx"] for it in items], dtype=torch.long)
        return out
