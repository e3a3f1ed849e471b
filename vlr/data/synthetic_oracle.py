"""The synthetic data's reference: what good *unimodal* encoders would know, written as feature files.

With random towers, ``reference=frozen_init`` would make structure preservation mean
preserving random structure. Instead the generator writes an oracle reference
(``<root>/reference/<split>.safetensors``, used through ``reference=oracle``):

- image: everything the picture shows. Each object contributes one-hots of its
  shape, colour, shape-and-colour and position, weighted by size (large 1, small 0.5).
  A strong image encoder sees all objects, including those no caption mentions.
- text: only what the caption says. TF-IDF over the training captions' words, the
  lexical view of a sentence encoder; it cannot know objects the caption leaves out.

So the image side is the stronger modality, as in the papers' setting, and the two
references disagree exactly where captions are partial.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import torch

from vlr.reference.files import save_features

SIZE_WEIGHT = {"large": 1.0, "small": 0.5}


def image_features(objects: list[dict], shapes, colours, positions) -> np.ndarray:
    shapes, colours, positions = list(shapes), list(colours), list(positions)
    out = np.zeros(len(shapes) + len(colours) + len(shapes) * len(colours) + len(positions), dtype=np.float32)
    for obj in objects:
        s, c, p = shapes.index(obj["shape"]), colours.index(obj["colour"]), positions.index(obj["position"])
        w = SIZE_WEIGHT[obj["size"]]
        base = len(shapes) + len(colours)
        for slot in (s, len(shapes) + c, base + s * len(colours) + c, base + len(shapes) * len(colours) + p):
            out[slot] += w
    return out


class TfIdf:
    """Word TF-IDF fitted on the training captions (smooth idf, as scikit-learn's default)."""

    def __init__(self, train_tokens: list[list[str]]):
        df = Counter(w for toks in train_tokens for w in set(toks))
        self.vocab = {w: i for i, w in enumerate(sorted(df))}
        n = len(train_tokens)
        self.idf = np.array([math.log((1 + n) / (1 + df[w])) + 1 for w in sorted(df)], dtype=np.float32)

    def __call__(self, tokens: list[str]) -> np.ndarray:
        out = np.zeros(len(self.vocab), dtype=np.float32)
        for w, count in Counter(tokens).items():
            if w in self.vocab:
                out[self.vocab[w]] = count * self.idf[self.vocab[w]]
        return out


def write_oracle_reference(images: list[dict], directory, shapes, colours, positions) -> None:
    """Feature files for every split of the synthetic annotation ``images`` (in annotation order)."""
    by_split: dict[str, list[dict]] = {}
    for entry in images:
        by_split.setdefault(entry["split"], []).append(entry)
    tfidf = TfIdf([s["tokens"] for e in by_split.get("train", []) for s in e["sentences"]])
    meta = {
        "image_encoder": (
            "synthetic oracle: size-weighted one-hots of every object's shape, colour, shape+colour, position"
        ),
        "text_encoder": "synthetic oracle: TF-IDF of caption words (training-caption vocabulary)",
    }
    for split, entries in by_split.items():
        image = np.stack([image_features(e["objects"], shapes, colours, positions) for e in entries])
        text = np.stack([tfidf(s["tokens"]) for e in entries for s in e["sentences"]])
        save_features(directory, split, torch.from_numpy(image), torch.from_numpy(text), meta)
