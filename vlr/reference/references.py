"""References: the intra-modal representations "structure" is measured against.

One reference serves both the objectives that distil from it (CoVLR, relation_kd, SAD)
and the evaluation's overlap@k, so every objective of a comparison is scored against the
same neighbourhoods. Chosen by the ``reference`` config group (``vlr/conf/reference/``):

- ``reference=frozen_init``: the towers' own outputs, from a frozen copy of the towers as
  constructed (the pretrained towers in the papers' setting; random towers give random
  structure). The newly initialised projections are not part of it: a random projection
  would only blur the structure the towers bring. It needs the towers, so its config is a
  factory (``_partial_``) that the module calls with its encoder;
- ``reference=features reference.path=<dir>``: precomputed per-image and per-caption
  feature files (see `vlr.reference.files`), looked up by dataset index;
- ``reference=oracle``: the synthetic data's generator-written features (the same class).

Both return L2-normalised rows for the items of a batch, through one interface:
``prepare(split_name, split, augmented)`` once per split, then ``embed(kind, split, batch)``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlr.errors import ConfigError
from vlr.reference.files import FeatureFileError, feature_dims, load_features

CACHE_OPTIONS = (True, False, "auto")


class FrozenInitReference(nn.Module):
    """``cache`` (the training split; evaluation splits are never augmented and always cached):
    keep each item's embedding per dataset index, since the reference is frozen and an item's
    embedding changes only with augmentation. ``auto``: cache when the training images are not
    augmented (``data.augment=false``)."""

    kind = "frozen_init"

    @staticmethod
    def upgrade_state_dict(state_dict: dict) -> dict:
        """Checkpoints written before the reference held the towers alone (``reference.encoder.*``,
        projections included): the same tower weights under their current names."""
        out = {}
        for key, value in state_dict.items():
            if key.startswith("reference.encoder."):
                rest = key[len("reference.encoder.") :]
                if rest.startswith(("image_proj.", "text_proj.")):
                    continue
                key = f"reference.{rest}"
            out[key] = value
        return out

    def __init__(self, encoder: Any, cache: bool | str = "auto"):
        super().__init__()
        if cache not in CACHE_OPTIONS:
            raise ConfigError(f"reference.cache must be true, false or auto, got {cache!r}")
        self.cache = cache
        self._cacheable: dict[str, bool] = {}
        self.image_tower = copy.deepcopy(encoder.image_tower).requires_grad_(False).eval()
        self.text_tower = copy.deepcopy(encoder.text_tower).requires_grad_(False).eval()
        self.image_dim, self.text_dim = int(encoder.image_tower.out_dim), int(encoder.text_tower.out_dim)
        self._rows: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)  # never trains: no dropout, frozen norms

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        """Nothing to load (embeddings are computed from the batch): decides whether the split's
        rows are cached."""
        explicit = split_name == "train" and self.cache != "auto"
        self._cacheable[split_name] = bool(self.cache) if explicit else not augmented

    def _cached(self, key: tuple[str, str], index: torch.Tensor, compute) -> torch.Tensor:
        """Rows of a per-dataset-index cache, computing the batch when any row is missing."""
        emb = None
        if key not in self._rows:
            emb = compute()
            self._rows[key] = (emb.new_zeros(0, emb.shape[1]), torch.zeros(0, dtype=torch.bool, device=emb.device))
        rows, filled = self._rows[key]
        if rows.shape[0] > int(index.max()) and bool(filled[index].all()):
            return rows[index]
        emb = compute() if emb is None else emb
        size = int(index.max()) + 1
        if rows.shape[0] < size:  # grow, keeping what is cached
            grown = emb.new_zeros(size, emb.shape[1])
            grown_filled = torch.zeros(size, dtype=torch.bool, device=emb.device)
            grown[: rows.shape[0]], grown_filled[: rows.shape[0]] = rows, filled
            rows, filled = grown, grown_filled
        rows[index], filled[index] = emb, True
        self._rows[key] = (rows, filled)
        return rows[index]

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        """Reference rows of a batch; computed once per dataset index when the split is cached
        (an unprepared split is computed every time)."""
        cacheable = self._cacheable.get(split, self.cache is True)
        if kind == "image":
            compute, index = lambda: F.normalize(self.image_tower(batch["images"]), dim=-1), batch["image_idx"]  # noqa: E731
        else:
            compute = lambda: F.normalize(self.text_tower(batch["input_ids"], batch["attention_mask"]), dim=-1)  # noqa: E731
            index = batch["caption_idx"]
        return self._cached((split, kind), index, compute) if cacheable else compute()


class FeatureReference(nn.Module):
    """Rows of precomputed feature files, one file set per split, loaded on first use."""

    kind = "features"

    def __init__(self, path: str):
        super().__init__()
        if not path:
            raise ConfigError("reference=features needs reference.path=<directory of feature files>")
        self.directory = str(path)
        self.image_dim, self.text_dim = feature_dims(path)
        self._splits: dict[str, dict[str, torch.Tensor]] = {}

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        """Load and validate ``split_name``'s files against the split's image and caption counts."""
        if split_name not in self._splits:
            loaded = load_features(self.directory, split_name, split.num_images, split.num_captions)
            for kind, dim in (("image", self.image_dim), ("text", self.text_dim)):
                if loaded[kind].shape[1] != dim:  # the objective's heads were sized from another split
                    raise FeatureFileError(
                        f"{self.directory}: split '{split_name}' has {kind} features of width {loaded[kind].shape[1]} "
                        f"but another split's are {dim} wide; all splits must come from the same encoders"
                    )
            self._splits[split_name] = {k: F.normalize(v, dim=-1) for k, v in loaded.items()}

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        if split not in self._splits:
            raise RuntimeError(f"reference features of split '{split}' were not prepared (call prepare first)")
        table = self._splits[split][kind]
        index = batch["image_idx" if kind == "image" else "caption_idx"]
        if table.device != index.device:
            table = self._splits[split][kind] = table.to(index.device)
        return table[index]


def build_reference(reference, encoder: nn.Module) -> nn.Module:
    """The module's reference: a built reference as is, a factory (the ``frozen_init`` config is a
    ``_partial_``) called with the encoder, ``None`` the frozen initial towers."""
    if reference is None:
        return FrozenInitReference(encoder)
    if isinstance(reference, nn.Module):
        return reference
    if callable(reference):
        return reference(encoder)
    raise ConfigError(
        f"reference must be a reference module or a factory of the encoder, got {type(reference).__name__}"
    )
