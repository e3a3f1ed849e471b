"""Control references: an existing reference made worse on purpose, so a study can ask whether a
structure-preserving objective profits from the reference's *structure* or from anything it adds.

- `ShuffledReference` (``reference=shuffled``): the negative control. Each batch gets the base
  reference's rows of the same items, permuted across the items: the similarities the
  objective distils are the same numbers, attached to the wrong items. A gain that survives it
  is regularisation, not structure. The permutation is per batch, not one per split, because
  a pixel-computed base (``reference=learned``'s image side) can only embed the images in the
  batch; it is a function of the batch's item indices and a private seed, so a batch gets the
  same permutation whatever ran before it (cold or warm caches, resumed runs).
- `NoisyReference` (``reference=noisy_oracle``): the base's row of each item mixed with a fixed
  random unit vector of that item, ``normalize((1 - level) * row + level * noise)``: level 0 is
  the base itself, level 1 pure noise. Over the generator's oracle it is a ground-truth
  reference of controlled quality. The noise of an item is fixed (one private generator per
  split and modality), so it is a consistent, worse reference, not jitter.

Both wrap a built reference (``base``: any reference module with ``prepare``/``embed``) and
never touch a global RNG.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlr.errors import ConfigError

KINDS = ("image", "text")


def _index_key(kind: str) -> str:
    return "image_idx" if kind == "image" else "caption_idx"


def _seed_of(*parts: object) -> int:
    """A 63-bit seed from the parts' text: stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _check_base(base: object, name: str) -> Any:
    if not isinstance(base, nn.Module) or not hasattr(base, "embed") or not hasattr(base, "prepare"):
        raise ConfigError(
            f"reference={name} wraps a built reference (reference.base: learned, features, oracle), "
            f"got {type(base).__name__}"
        )
    return base


class ShuffledReference(nn.Module):
    """The base reference's rows of a batch, permuted across the batch's items (see the module
    docstring). ``seed``: the private generator's seed."""

    kind = "shuffled"

    def __init__(self, base: Any, seed: int = 0):
        super().__init__()
        self.base = _check_base(base, "shuffled")
        self.seed = int(seed)
        self.image_dim, self.text_dim = int(base.image_dim), int(base.text_dim)
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        self.base.prepare(split_name, split, augmented)

    def permutation(self, kind: str, split: str, index: torch.Tensor) -> torch.Tensor:
        """The batch's permutation: a function of (seed, split, modality, the batch's items)."""
        items = ",".join(map(str, index.cpu().tolist()))
        generator = torch.Generator().manual_seed(_seed_of(self.seed, split, kind, items))
        return torch.randperm(len(index), generator=generator)

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        rows = self.base.embed(kind, split, batch)
        order = self.permutation(kind, split, batch[_index_key(kind)])
        return rows[order.to(rows.device)]


class NoisyReference(nn.Module):
    """``normalize((1 - level) * base row + level * the item's fixed random unit vector)``."""

    kind = "noisy"

    def __init__(self, base: Any, level: float = 0.5, seed: int = 0):
        super().__init__()
        if not 0.0 <= float(level) <= 1.0:
            raise ConfigError(f"reference.level must be in [0, 1], got {level}")
        self.base = _check_base(base, "noisy_oracle")
        self.level, self.seed = float(level), int(seed)
        self.image_dim, self.text_dim = int(base.image_dim), int(base.text_dim)
        self._noise: dict[tuple[str, str], torch.Tensor] = {}
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        self.base.prepare(split_name, split, augmented)
        for kind, size in (("image", int(split.num_images)), ("text", int(split.num_captions))):
            table = self._noise.get((split_name, kind))
            if table is None or table.shape[0] != size:
                self._noise[(split_name, kind)] = self.noise_rows(kind, split_name, size)

    def noise_rows(self, kind: str, split: str, size: int) -> torch.Tensor:
        """Unit vectors, one per item of the split: drawn once, in item order, from a generator
        of (seed, split, modality), so an item's noise does not depend on batches or order."""
        generator = torch.Generator().manual_seed(_seed_of(self.seed, split, kind))
        dim = self.image_dim if kind == "image" else self.text_dim
        return F.normalize(torch.randn(size, dim, generator=generator), dim=-1)

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        rows = self.base.embed(kind, split, batch)
        if self.level == 0.0:
            return rows
        table = self._noise.get((split, kind))
        if table is None:
            raise RuntimeError(f"noisy reference: split '{split}' was not prepared (call prepare first)")
        noise = table[batch[_index_key(kind)].cpu()].to(rows.device, rows.dtype)
        return F.normalize((1.0 - self.level) * rows + self.level * noise, dim=-1)
