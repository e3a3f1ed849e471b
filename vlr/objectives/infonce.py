"""Symmetric InfoNCE (image-text contrastive), the hard cross-modal consistency baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vlr.objectives.base import OBJECTIVES, Objective
from vlr.objectives.distributed import gather_no_grad, gather_with_grad, local_rows
from vlr.objectives.temperature import Temperature


def same_image_targets(image_ids: torch.Tensor) -> torch.Tensor:
    """Row-normalised positive matrix: every pair showing the same image is a positive."""
    pos = (image_ids[:, None] == image_ids[None, :]).float()
    return pos / pos.sum(dim=1, keepdim=True)


def contrastive_terms(
    v: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, temperature: torch.Tensor, rows: slice | None = None
) -> dict:
    """Soft-target InfoNCE in both directions over already-gathered features (X-VLM's ITC).

    ``rows``: only these rows' terms, each against the whole gathered batch (open_clip's
    ``local_loss``): a rank computes 2·(B/W)·B logits instead of 2·B², and the mean of the
    ranks' results is the global loss (so DDP's gradient average gives its gradient)."""
    rows = rows if rows is not None else slice(None)
    targets = same_image_targets(ids)[rows]  # positives by image id, over the whole global batch
    i2t = -(F.log_softmax(v[rows] @ t.T / temperature, dim=1) * targets).sum(dim=1).mean()
    t2i = -(F.log_softmax(t[rows] @ v.T / temperature, dim=1) * targets).sum(dim=1).mean()
    return {"itc_i2t": i2t / 2, "itc_t2i": t2i / 2}


@OBJECTIVES.register("infonce")
class InfoNCE(Objective):
    """Symmetric InfoNCE over the global batch; captions of the same image are positives (soft targets).

    ``local_loss``: each rank scores only its own rows against the gathered batch (the
    memory and compute of a large global batch divided by the world size); the gradients
    are the global loss's. The logged value is then the rank's own share."""

    def __init__(
        self,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        weight: float = 1.0,
        local_loss: bool = False,
    ):
        super().__init__()
        self.temperature = Temperature(temperature, learnable_temperature)
        self.weight, self.local_loss = weight, bool(local_loss)

    def forward(self, image_emb, text_emb, image_ids, reference=None):
        v, t, ids = gather_with_grad(image_emb), gather_with_grad(text_emb), gather_no_grad(image_ids)
        rows = local_rows(image_emb.shape[0]) if self.local_loss else None
        return {k: self.weight * x for k, x in contrastive_terms(v, t, ids, self.temperature(), rows).items()}

    def log_values(self):
        return {"temperature": float(self.temperature().detach())}
