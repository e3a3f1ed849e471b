"""`ParameterCounts`: trainable and frozen parameters per part of the model, logged once.

Each logger receives them as hyper-parameters when fitting starts (W&B: the run config,
so the runs table can show and sort by them; CSV: ``hparams.yaml``): ``params/<part>/trainable``
and ``params/<part>/frozen`` for the image tower, the text tower, the projections, the
objective's own parameters (temperatures, SAD's heads) and the reference (a frozen copy of
the towers for ``reference=frozen_init``, nothing for feature files).
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from torch import nn


def parameter_counts(module: nn.Module) -> dict[str, int]:
    """``params/<part>/{trainable,frozen}`` for a `RetrievalModule` (any module with ``encoder``)."""
    encoder = getattr(module, "encoder")  # noqa: B009 -- nn.Module types attributes as Tensor | Module
    parts: dict[str, list[nn.Module]] = {
        "image_tower": [encoder.image_tower],
        "text_tower": [encoder.text_tower],
        "projections": [encoder.image_proj, encoder.text_proj],
        "objective": [getattr(module, "objective")],  # noqa: B009
        "reference": [getattr(module, "reference")],  # noqa: B009
    }
    out = {}
    for name, modules in parts.items():
        params = [p for m in modules for p in m.parameters()]
        out[f"params/{name}/trainable"] = sum(p.numel() for p in params if p.requires_grad)
        out[f"params/{name}/frozen"] = sum(p.numel() for p in params if not p.requires_grad)
    out["params/total/trainable"] = sum(v for k, v in out.items() if k.endswith("/trainable"))
    out["params/total/frozen"] = sum(v for k, v in out.items() if k.endswith("/frozen"))
    return out


class ParameterCounts(Callback):
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        counts = parameter_counts(pl_module)
        for logger in trainer.loggers:
            logger.log_hyperparams(counts)
