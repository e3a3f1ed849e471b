"""Label relevance: graded by shared class or category ids, where a dataset has labels.

1-D class ids: 1 for the same class, else 0. 2-D multi-hot (COCO instance categories):
|A ∩ B| / max(|A|, |B|), the share of the larger label set the other shares (1 only for
equal sets; an image without labels shares nothing). The same normalisation as the scene
relevance, with each label an object of one attribute.
"""

from __future__ import annotations

import torch


def labels_relevance(labels: torch.Tensor) -> torch.Tensor:
    """[n, n] float32 relevance of every pair of images from their ``labels``."""
    labels = torch.as_tensor(labels)
    if labels.ndim == 1:
        return (labels[:, None] == labels[None, :]).float()
    if labels.ndim != 2:
        raise ValueError(f"labels must be 1-D class ids or 2-D multi-hot, got {labels.ndim}-D")
    lf = labels.float()
    shared = lf @ lf.T
    size = lf.sum(1)
    larger = torch.maximum(size[:, None], size[None, :])
    return torch.where(larger > 0, shared / larger.clamp_min(1), torch.zeros_like(shared))
