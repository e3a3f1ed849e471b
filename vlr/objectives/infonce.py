"""Symmetric InfoNCE (image-text contrastive), the hard cross-modal consistency baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlr.distributed import gather_no_grad, gather_with_grad
from vlr.errors import ConfigError
from vlr.objectives.base import OBJECTIVES, Objective


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


class Temperature(nn.Module):
    """A temperature, learnable in log space by default, kept in [min, max] as X-VLM does: the
    parameter itself is clamped after each optimizer step (`clamp_`), not the value inside the
    loss, where a clamp would cut its gradient and leave it stuck at the bound for good."""

    def __init__(
        self,
        init: float = 0.07,
        learnable: bool = True,
        min: float = 0.001,
        max: float = 0.5,
        option: str = "objective.temperature",
    ):
        super().__init__()
        # the bounds keep a *learnable* temperature sane; a fixed one may be any positive value
        if learnable and not min <= init <= max:
            raise ConfigError(
                f"{option}={init} is outside the bounds [{min}, {max}] of a learnable temperature; "
                f"choose a value inside them or fix it ({option.rsplit('.', 1)[0]}.learnable_"
                f"{option.rsplit('.', 1)[1]}=false)"
            )
        if init <= 0:
            raise ConfigError(f"{option} must be > 0, got {init}")
        self.log_value = nn.Parameter(torch.tensor(math.log(init)), requires_grad=learnable)
        self.min, self.max = (min, max) if learnable else (init, init)

    def forward(self) -> torch.Tensor:
        return self.log_value.exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_value.clamp_(math.log(self.min), math.log(self.max))


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
