"""The learnable temperature every contrastive objective shares, bounded X-VLM style."""

from __future__ import annotations

import math

import torch
from torch import nn

from vlr.errors import ConfigError


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
