"""Symmetric InfoNCE (image-text contrastive), the hard cross-modal consistency baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlr.objectives.base import OBJECTIVES, Objective
from vlr.objectives.distributed import gather_no_grad, gather_with_grad
from vlr.objectives.temperature import Temperature


def same_image_targets(image_ids: torch.Tensor) -> torch.Tensor:
    """Row-normalised positive matrix: every pair showing the same image is a positive."""
    pos = (image_ids[:, None] == image_ids[None, :]).float()
    return pos / pos.sum(dim=1, keepdim=True)


def contrastive_terms(v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, temperature: torch.Tensor) -> dict:
    """Soft-target InfoNCE in both directions over already-gathered features (X-VLM's ITC)."""
    logits = v @ t.T / temperature
    targets = same_image_targets(ids)
    i2t = -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()
    t2i = -(F.log_softmax(logits.T, dim=1) * targets).sum(dim=1).mean()
    return {"itc_i2t": i2t / 2, "itc_t2i": t2i / 2}


@OBJECTIVES.register("infonce")
class InfoNCE(Objective):
    """Symmetric InfoNCE over the global batch; captions of the same image are positives (soft targets)."""

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = True, weight: float = 1.0):
        super().__init__()
        self.temperature = Temperature(temperature, learnable_temperature)
        self.weight = weight

    def forward(self, image_emb, text_emb, image_ids, reference=None):
        v, t, ids = gather_with_grad(image_emb), gather_with_grad(text_emb), gather_no_grad(image_ids)
        return {k: self.weight * x for k, x in contrastive_terms(v, t, ids, self.temperature()).items()}

    def log_values(self):
        return {"temperature": float(self.temperature().detach())}
