"""What `RetrievalModule` does when ``model.fusion`` is set: build the fusion encoder, add the ITM
term to every objective's loss, and give the evaluator its ITM pair scorer.

The objective acts on the ITC embeddings unchanged; ITM is one more named term,
``itm`` = ``objective.itm_weight`` x the ITM loss (`vlr.models.itm`). An objective that
embeds the batch once (the base `Objective.batch_terms`) gets its embeddings from the same
tower pass that gives the fusion encoder its tokens; one that runs the towers its own way
(CoVLR's virtual step) keeps doing so, and the ITM term then runs the towers once more.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlr.errors import ConfigError
from vlr.models.fusion import FusionEncoder
from vlr.models.fusion_checkpoint import load_fusion_checkpoint
from vlr.models.itm import itm_loss
from vlr.models.tokens import token_width
from vlr.objectives import Objective

ARCHITECTURE = ("layers", "heads", "intermediate_size", "dropout", "layer_norm_eps", "itm_head", "init_seed")
NEGATIVES = ("negative_temperature", "negative_temperature_start", "negative_anneal_fraction", "seed")
OPTIONS = (*ARCHITECTURE, "checkpoint", "checkpoint_layout", "checkpoint_first_layer", *NEGATIVES, "lr_scale")


class FusionOptions:
    """``model.fusion``: the encoder's architecture, its checkpoint, its learning rate, and how
    ITM samples negatives."""

    def __init__(self, options: dict):
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise ConfigError(f"model.fusion has unknown option(s) {unknown}; known: {list(OPTIONS)}")
        self.architecture = {k: options[k] for k in ARCHITECTURE if options.get(k) is not None}
        self.checkpoint = options.get("checkpoint")
        self.checkpoint_layout = options.get("checkpoint_layout") or "albef"
        self.checkpoint_first_layer = options.get("checkpoint_first_layer")
        self.negative_temperature = float(options.get("negative_temperature", 0.07))
        start = options.get("negative_temperature_start")
        self.negative_temperature_start = None if start is None else float(start)
        self.negative_anneal_fraction = float(options.get("negative_anneal_fraction", 0.5))
        self.lr_scale = float(options.get("lr_scale", 1.0))
        for name in ("negative_temperature", "negative_temperature_start", "lr_scale"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"model.fusion.{name} must be > 0, got {value}")
        if not 0 < self.negative_anneal_fraction <= 1:
            raise ConfigError(
                f"model.fusion.negative_anneal_fraction must be in (0, 1], got {self.negative_anneal_fraction}"
            )
        self.seed = int(options.get("seed", 0))

    def temperature_at(self, step: int, total_steps: int) -> float:
        """The negatives' temperature at optimizer step ``step`` of ``total_steps``.

        Without ``negative_temperature_start``: ``negative_temperature`` throughout (ALBEF, X-VLM).
        With it: geometric from the start to ``negative_temperature`` over the first
        ``negative_anneal_fraction`` of training, then constant. A fusion encoder trained from
        scratch on the hardest negatives from its first step stays at the class prior (it never
        learns the easy distinctions the hard ones build on; docs/fusion.md); near-uniform
        negatives first let it."""
        if self.negative_temperature_start is None:
            return self.negative_temperature
        progress = min(1.0, step / max(1.0, self.negative_anneal_fraction * total_steps))
        return self.negative_temperature_start ** (1 - progress) * self.negative_temperature**progress


def build_fusion(options: FusionOptions, image_tower: nn.Module, text_tower: nn.Module) -> FusionEncoder:
    """The fusion encoder over the towers' token widths, from ``model.fusion.checkpoint`` when set."""
    try:
        fusion = FusionEncoder(token_width(text_tower), token_width(image_tower), **options.architecture)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    if options.checkpoint:
        load_fusion_checkpoint(fusion, options.checkpoint, options.checkpoint_layout, options.checkpoint_first_layer)
    return fusion


def itm_weight(objective: Objective) -> float:
    """``objective.itm_weight`` (`vlr.objectives.create_objective` keeps it on the objective;
    default 2, the SAD release's 1 ITC + 2 ITM)."""
    return float(objective.itm_weight)


def negatives_generator(seed: int, step: int, batch_idx: int) -> torch.Generator:
    """The private generator of one training batch's negatives: the same step of a resumed run
    draws the same ones, and no global RNG moves."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_000_003 + batch_idx)


def training_terms_with_itm(
    encoder: Any,
    objective: Objective,
    reference: Any,
    fusion: FusionEncoder,
    options: FusionOptions,
    batch: dict,
    generator: torch.Generator,
    temperature: float | None = None,
) -> dict[str, torch.Tensor]:
    """The objective's terms plus ``itm`` for one training batch, its negatives drawn at
    ``temperature`` (`FusionOptions.temperature_at`; None: ``model.fusion.negative_temperature``)."""
    images, ids, mask = batch["images"], batch["input_ids"], batch["attention_mask"]
    if type(objective).batch_terms is Objective.batch_terms:  # one tower pass serves both
        out = encoder.encode_with_tokens(images, ids, mask)
        terms = objective.embedding_terms(out["image_emb"], out["text_emb"], batch, reference)
    else:
        terms = objective.batch_terms(encoder, batch, reference)
        out = encoder.encode_with_tokens(images, ids, mask)
    loss = itm_loss(
        fusion,
        out["image_emb"],
        out["text_emb"],
        out["image_tokens"],
        out["text_tokens"],
        mask,
        batch["image_idx"],
        generator,
        options.negative_temperature if temperature is None else temperature,
        batch.get("caption_idx"),  # negatives drawn in caption order: the same on any number of ranks
    )
    return {**terms, "itm": itm_weight(objective) * loss}
