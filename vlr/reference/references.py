"""Reference (teacher) representations: what "intra-modal structure" is measured against.

One reference serves both the objectives that distil from it (CoVLR, SAD) and the
evaluation's overlap@k, so every objective of a comparison is scored against the
same neighbourhoods. Chosen by ``objective.teacher``:

- ``frozen_init``: the towers' own outputs, from a frozen copy of the towers as
  constructed (the pretrained towers in the papers' setting; random towers give random
  structure). The newly initialised projections are not part of it: a random projection
  would only blur the structure the towers bring;
- ``features``: precomputed per-image and per-caption feature files
  (``objective.teacher_features``, see `vlr.reference.files`), looked up by dataset index.

Both return L2-normalised rows for the items of a batch.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from vlr.reference.files import FeatureFileError, feature_dims, load_features

TEACHERS = ("frozen_init", "features")


class FrozenInitReference(nn.Module):
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

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.image_tower = copy.deepcopy(encoder.image_tower).requires_grad_(False).eval()
        self.text_tower = copy.deepcopy(encoder.text_tower).requires_grad_(False).eval()
        self.image_dim, self.text_dim = encoder.image_tower.out_dim, encoder.text_tower.out_dim
        self._rows: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)  # never trains: no dropout, frozen norms

    def prepare(self, split_name: str, split) -> None:
        """Nothing to load: embeddings are computed from the batch."""

    def _cached(self, key: tuple[str, str], index: torch.Tensor, compute) -> torch.Tensor:
        """Rows of a per-dataset-index cache, computing the batch when any row is missing."""
        rows, filled = self._rows.get(key, (None, None))
        if rows is not None and rows.shape[0] > int(index.max()) and bool(filled[index].all()):
            return rows[index]
        emb = compute()
        size = int(index.max()) + 1
        if rows is None or rows.shape[0] < size:  # grow, keeping what is cached
            grown = emb.new_zeros(size, emb.shape[1])
            grown_filled = torch.zeros(size, dtype=torch.bool, device=emb.device)
            if rows is not None:
                grown[: rows.shape[0]], grown_filled[: rows.shape[0]] = rows, filled
            rows, filled = grown, grown_filled
        rows[index], filled[index] = emb, True
        self._rows[key] = (rows, filled)
        return rows[index]

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict, cacheable: bool) -> torch.Tensor:
        """Reference rows of a batch. The reference is frozen, so an item's embedding only
        changes with augmentation: when ``cacheable`` it is computed once per dataset index."""
        if kind == "image":
            compute, index = lambda: F.normalize(self.image_tower(batch["images"]), dim=-1), batch["image_idx"]  # noqa: E731
        else:
            compute = lambda: F.normalize(self.text_tower(batch["input_ids"], batch["attention_mask"]), dim=-1)  # noqa: E731
            index = batch["caption_idx"]
        return self._cached((split, kind), index, compute) if cacheable else compute()


class FeatureReference(nn.Module):
    """Rows of precomputed feature files, one file set per split, loaded on first use."""

    kind = "features"

    def __init__(self, directory: str):
        super().__init__()
        self.directory = str(directory)
        self.image_dim, self.text_dim = feature_dims(directory)
        self._splits: dict[str, dict[str, torch.Tensor]] = {}

    def prepare(self, split_name: str, split) -> None:
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
    def embed(self, kind: str, split: str, batch: dict, cacheable: bool = True) -> torch.Tensor:
        if split not in self._splits:
            raise RuntimeError(f"reference features of split '{split}' were not prepared (call prepare first)")
        table = self._splits[split][kind]
        index = batch["image_idx" if kind == "image" else "caption_idx"]
        if table.device != index.device:
            table = self._splits[split][kind] = table.to(index.device)
        return table[index]


def build_reference(teacher: str, teacher_features: str | None, encoder: nn.Module) -> nn.Module:
    if teacher not in TEACHERS:
        raise ValueError(f"objective.teacher must be one of {TEACHERS}, got '{teacher}'")
    if teacher == "features":
        if not teacher_features:
            raise ValueError("objective.teacher=features needs objective.teacher_features=<directory of feature files>")
        return FeatureReference(teacher_features)
    return FrozenInitReference(encoder)
