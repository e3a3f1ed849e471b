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


class TrainPairs(Dataset):
    """One item per caption: (image, caption, image index, caption index)."""

    def __init__(self, split: CaptionSplit, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return self.split.num_captions

    def __getitem__(self, c: int):
        i = int(self.split.text_to_image[c])
        image = self.transform(load_rgb(self.split.image_paths[i]))
        return {"image": image, "caption": self.split.captions[c], "image_idx": i, "caption_idx": c}


class EvalImages(Dataset):
    def __init__(self, split: CaptionSplit, transform: Callable):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return self.split.num_images

    def __getitem__(self, i: int):
        return {"image": self.transform(load_rgb(self.split.image_paths[i])), "image_idx": i}


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
