"""Imbalance operations by name: each weakens one side of the data at a strength in [0, 1].

Every op is a pure function of (strength, seed, item index): the weakened dataset is a
fixed property of the setting, the same in every epoch, on every rank and on a rerun.
Text ops map one caption to a weaker one; image ops map one PIL image to a weaker one;
``pair_noise`` re-pairs captions with other images; ``fewer_captions`` drops captions.
Add one: a function registered in ``TEXT_OPS`` or ``IMAGE_OPS`` (the one extension point).
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageFilter

from vlr.registry import Registry

TEXT_OPS: Registry = Registry("text imbalance op")
IMAGE_OPS: Registry = Registry("image imbalance op")

# Attribute words captions can lose: colours, sizes and places (those of the synthetic
# data, plus common colours of real captions). Nouns (the object) stay.
ATTRIBUTE_WORDS = frozenset(
    "red green blue yellow purple orange white black brown pink gray grey "
    "large small big bigger little tiny huge "
    "left right top bottom middle".split()
)


def rng_for(seed: int, salt: str, index: int) -> np.random.Generator:
    """The generator of one item for one op: independent across ops, items and seeds."""
    return np.random.default_rng([seed, zlib.crc32(salt.encode()), index])


# -- text ----------------------------------------------------------------------------
@TEXT_OPS.register("attribute_omission")
def attribute_omission(words: list[str], strength: float, rng: np.random.Generator, vocab) -> list[str]:
    """Each attribute word (colour, size, place) is dropped with probability ``strength``."""
    return [w for w in words if w.lower() not in ATTRIBUTE_WORDS or rng.random() >= strength]


@TEXT_OPS.register("word_dropout")
def word_dropout(words, strength, rng, vocab):
    """Each word is dropped with probability ``strength`` (at least one word stays)."""
    kept = [w for w in words if rng.random() >= strength]
    return kept or words[:1]


@TEXT_OPS.register("truncation")
def truncation(words, strength, rng, vocab):
    """Keep the first ``ceil((1 - strength) * n)`` words (at least one)."""
    return words[: max(1, int(np.ceil((1.0 - strength) * len(words))))]


@TEXT_OPS.register("caption_noise")
def caption_noise(words, strength, rng, vocab):
    """Each word is replaced by a random word of the training vocabulary with probability ``strength``."""
    return [str(vocab[rng.integers(len(vocab))]) if rng.random() < strength else w for w in words]


# -- image ---------------------------------------------------------------------------
@IMAGE_OPS.register("noise")
def gaussian_noise(img: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    """Additive Gaussian pixel noise, std = 0.5 * strength of the [0, 255] range."""
    x = np.asarray(img, dtype=np.float64) + rng.normal(0.0, 127.5 * strength, np.asarray(img).shape)
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


@IMAGE_OPS.register("colour_omission")
def colour_omission(img, strength, rng):
    """The image loses its colour (greyscale, same luminance) with probability ``strength``:
    the image-side counterpart of ``attribute_omission``, which drops colour words."""
    if rng.random() >= strength:
        return img
    return img.convert("L").convert(img.mode)


@IMAGE_OPS.register("blur")
def blur(img, strength, rng):
    """Gaussian blur with radius = strength * 8% of the short side."""
    return img.filter(ImageFilter.GaussianBlur(radius=strength * 0.08 * min(img.size)))


@IMAGE_OPS.register("occlusion")
def occlusion(img, strength, rng):
    """A grey square covering ``strength`` of the image area at a seeded position."""
    w, h = img.size
    side = int(round(np.sqrt(strength) * min(w, h)))
    if side == 0:
        return img
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    out = img.copy()
    out.paste((128, 128, 128), (x0, y0, x0 + side, y0 + side))
    return out


@IMAGE_OPS.register("downsample")
def downsample(img, strength, rng):
    """Down-sample to ``1 - 0.875 * strength`` of the size (1/8 at strength 1) and back up."""
    w, h = img.size
    scale = 1.0 - 0.875 * strength
    small = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    return small.resize((w, h), Image.NEAREST)
