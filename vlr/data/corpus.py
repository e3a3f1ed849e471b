"""`CaptionSplit`: one split of an image-caption dataset as the rest of vlr sees it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass
class CaptionSplit:
    """Unique images and all their captions; caption c belongs to image ``text_to_image[c]``.

    ``tokens`` are the dataset's own word tokens (Karpathy ``tokens``) where given, used
    for ROUGE-L relevance; ``labels`` are i2i ground truth where the dataset has any
    (1-D class ids or 2-D multi-hot); ``scenes`` each image's objects (a list of attribute
    dicts, vlr's synthetic data) for scene relevance; ``caption_ids`` the dataset's own
    caption ids (COCO annotation ids, which CxC's human ratings name).
    """

    name: str
    image_paths: list[Path]
    captions: list[str]
    text_to_image: torch.Tensor
    tokens: list[list[str]] | None = None
    labels: torch.Tensor | None = None
    source: str = ""
    # the captions training draws from (None = all); imbalance's fewer_captions keeps a subset
    # without renumbering, so caption indices still address reference features and the annotation
    active_captions: torch.Tensor | None = None
    scenes: list[list[dict]] | None = None
    caption_ids: list[int] | None = None

    @property
    def num_images(self) -> int:
        return len(self.image_paths)

    @property
    def num_captions(self) -> int:
        return len(self.captions)

    def keep_images(self, keep: list[int]) -> CaptionSplit:
        """The split restricted to images ``keep`` (in order) and their captions, renumbered."""
        keep_t = torch.tensor(keep, dtype=torch.long)
        new_index = torch.full((self.num_images,), -1, dtype=torch.long)
        new_index[keep_t] = torch.arange(len(keep))
        captions = (new_index[self.text_to_image] >= 0).nonzero().flatten().tolist()
        return dataclasses.replace(
            self,
            image_paths=[self.image_paths[i] for i in keep],
            captions=[self.captions[c] for c in captions],
            text_to_image=new_index[self.text_to_image[captions]],
            tokens=None if self.tokens is None else [self.tokens[c] for c in captions],
            labels=None if self.labels is None else self.labels[keep_t],
            active_captions=None,
            scenes=None if self.scenes is None else [self.scenes[i] for i in keep],
            caption_ids=None if self.caption_ids is None else [self.caption_ids[c] for c in captions],
        )
