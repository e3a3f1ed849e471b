"""`GradedRelevance`: one named graded relevance over a split, and the gains each query sees.

Two layouts, because the kinds differ in what they grade: ROUGE-L grades a caption against
an image's captions (``per="caption"``: [num_captions, num_images]); the scene ground truth
and shared labels grade an image against an image (``per="image"``: [num_images, num_images]),
and a caption inherits its image's row. Keeping the image layout avoids expanding it five-fold
(COCO: 25k x 5k) for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("scene", "rouge_l", "labels")  # the graded kinds: their names prefix NDCG keys


@dataclass
class GradedRelevance:
    """``matrix`` in [0, 1]; ``name`` prefixes every NDCG it grades (``i2i/{name}_NDCG@10``)."""

    name: str
    matrix: torch.Tensor
    per: str = "caption"  # "caption": [num_captions, num_images] | "image": [num_images, num_images]

    def __post_init__(self) -> None:
        if self.per not in ("caption", "image"):
            raise ValueError(f"GradedRelevance.per must be 'caption' or 'image', got {self.per!r}")
        if self.matrix.ndim != 2:
            raise ValueError(f"relevance '{self.name}' must be a 2-D matrix, got shape {tuple(self.matrix.shape)}")

    def check(self, num_captions: int, num_images: int) -> None:
        rows = num_captions if self.per == "caption" else num_images
        if tuple(self.matrix.shape) != (rows, num_images):
            raise ValueError(
                f"relevance '{self.name}' (per {self.per}) must be [{rows}, {num_images}], "
                f"got {tuple(self.matrix.shape)}"
            )

    def to(self, device) -> GradedRelevance:
        return GradedRelevance(self.name, self.matrix.to(device), self.per)

    def restrict(self, captions: torch.Tensor, images: torch.Tensor) -> GradedRelevance:
        """The relevance of a sub-gallery: caption rows ``captions`` (per caption) or image rows
        ``images`` (per image), image columns ``images``, renumbered in that order."""
        rows = captions if self.per == "caption" else images
        return GradedRelevance(
            self.name, self.matrix[rows.to(self.matrix.device)][:, images.to(self.matrix.device)], self.per
        )

    def gains(self, t2i: torch.Tensor, first: torch.Tensor):
        """Gain functions of a chunk of queries (indices into the query set) over the images and
        over the captions: ``(image_query_to_images, image_query_to_captions,
        caption_query_to_images, caption_query_to_captions)``.

        Per caption (ROUGE-L, the papers' rule): an image query i is its first caption
        ``first[i]`` against images, and image i's column against captions; a caption query c
        is its own row against images and its image's column against captions. Per image: every
        item is its image's row."""
        m = self.matrix
        if self.per == "caption":
            return (
                lambda q: m[first[q]],
                lambda q: m[:, q].T,
                lambda c: m[c],
                lambda c: m[:, t2i[c]].T,
            )
        return (
            lambda q: m[q],
            lambda q: m[q][:, t2i],
            lambda c: m[t2i[c]],
            lambda c: m[t2i[c]][:, t2i],
        )
