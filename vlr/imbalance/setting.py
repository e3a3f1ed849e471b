"""`Imbalance`: one named, seeded imbalance setting (``vlr/conf/imbalance/*.yaml``) with a strength.

A setting lists its ops with a scale each; an op runs at ``scale * strength`` (clipped to
[0, 1]), so ``strength=0`` is the balanced data whatever the setting, and one number
dials the imbalance in. Training data is always affected; validation and test only with
``apply_to_eval=true`` (that changes the benchmark, so it is off by default).
"""

from __future__ import annotations

import dataclasses
import logging
import math

import torch

from vlr.data.corpus import CaptionSplit
from vlr.imbalance.ops import IMAGE_OPS, TEXT_OPS, rng_for

log = logging.getLogger(__name__)
TOWER_SIDES, TOWER_MODES = ("image", "text"), ("shrink", "freeze")


class Imbalance:
    def __init__(
        self,
        name: str = "none",
        strength: float = 0.0,
        seed: int = 0,
        apply_to_eval: bool = False,
        text: dict | None = None,
        image: dict | None = None,
        pair_noise: float = 0.0,
        fewer_captions: float = 0.0,
        tower: dict | None = None,
    ):
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"imbalance.strength must be in [0, 1], got {strength}")
        for op in text or {}:
            TEXT_OPS.get(op)  # unknown names fail here, listing the known ones
        for op in image or {}:
            IMAGE_OPS.get(op)
        self.tower = dict(tower or {})
        if self.tower and (self.tower.get("side") not in TOWER_SIDES or self.tower.get("mode") not in TOWER_MODES):
            raise ValueError(f"imbalance.tower needs side in {TOWER_SIDES} and mode in {TOWER_MODES}, got {self.tower}")
        if fewer_captions and apply_to_eval:
            raise ValueError(
                "imbalance.fewer_captions applies to training only; it cannot be used with apply_to_eval=true"
            )
        self.name, self.strength, self.seed, self.apply_to_eval = name, float(strength), int(seed), bool(apply_to_eval)
        self.text, self.image = dict(text or {}), dict(image or {})
        self.pair_noise, self.fewer_captions = float(pair_noise), float(fewer_captions)

    def level(self, scale: float) -> float:
        return min(1.0, max(0.0, float(scale) * self.strength))

    def applies_to(self, split_name: str) -> bool:
        return self.strength > 0 and (split_name == "train" or self.apply_to_eval)

    # -- captions and pairs ---------------------------------------------------------------
    def apply_split(self, split: CaptionSplit, vocab: list[str]) -> CaptionSplit:
        """The weakened split (captions, pairing, active captions); the original is not modified."""
        if not self.applies_to(split.name):
            return split
        captions, tokens = (
            list(split.captions),
            [list(t) for t in (split.tokens or [c.split() for c in split.captions])],
        )
        for op, scale in self.text.items():
            level, fn = self.level(scale), TEXT_OPS.get(op)
            if level == 0:
                continue
            for c in range(len(tokens)):
                tokens[c] = fn(tokens[c], level, rng_for(self.seed, op, c), vocab)
        if self.text and any(self.level(s) > 0 for s in self.text.values()):
            captions = [" ".join(t) for t in tokens]
        text_to_image = split.text_to_image.clone()
        level = self.level(self.pair_noise)
        if level > 0 and split.num_images > 1:
            for c in range(len(captions)):
                rng = rng_for(self.seed, "pair_noise", c)
                if rng.random() < level:  # re-pair with another image, never its own
                    text_to_image[c] = (
                        int(split.text_to_image[c]) + 1 + int(rng.integers(split.num_images - 1))
                    ) % split.num_images
        active = split.active_captions
        level = self.level(self.fewer_captions)
        if level > 0:
            keep = torch.zeros(len(captions), dtype=torch.bool)
            for i in range(split.num_images):
                own = (split.text_to_image == i).nonzero().flatten()
                keep[own[: max(1, math.ceil((1.0 - level) * len(own)))]] = True
            active = keep.nonzero().flatten()
        out = dataclasses.replace(
            split, captions=captions, tokens=tokens, text_to_image=text_to_image, active_captions=active
        )
        log.info("imbalance '%s' (strength %.2f) applied to the %s split", self.name, self.strength, split.name)
        return out

    # -- images ---------------------------------------------------------------------------
    def image_degrader(self, split_name: str):
        """A callable (PIL image, image index) -> weaker image, or None when nothing applies."""
        ops = [(op, self.level(scale), IMAGE_OPS.get(op)) for op, scale in self.image.items()]
        ops = [o for o in ops if o[1] > 0]
        if not ops or not self.applies_to(split_name):
            return None
        return ImageDegrader(ops, self.seed)

    # -- towers ---------------------------------------------------------------------------
    def apply_to_model_config(self, model_cfg: dict) -> dict:
        """Tower asymmetry: a shallower (``shrink``) or frozen (``freeze``) tower on one side."""
        if not self.tower or self.strength == 0:
            return model_cfg
        side, mode = self.tower["side"], self.tower["mode"]
        tower = model_cfg[f"{side}_tower"]
        if mode == "freeze":
            tower["freeze"] = True
            return model_cfg
        if side == "text":
            holder, key = tower.get("config"), "num_hidden_layers"
        else:
            holder, key = tower.get("model_kwargs"), "depth"
        if not holder or key not in holder:
            raise ValueError(
                f"imbalance '{self.name}' shrinks the {side} tower, which needs model.{side}_tower."
                f"{'config' if side == 'text' else 'model_kwargs'}.{key} (a tower built from a config)"
            )
        holder[key] = max(1, round(holder[key] * (1.0 - self.level(self.tower.get("scale", 1.0)))))
        return model_cfg


class ImageDegrader:
    """Picklable (for loader workers): applies the image ops in order, seeded per image."""

    def __init__(self, ops, seed: int):
        self.ops, self.seed = ops, seed

    def __call__(self, img, index: int):
        for op, level, fn in self.ops:
            img = fn(img, level, rng_for(self.seed, op, index))
        return img
