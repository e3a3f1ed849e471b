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

Both return L2-normalised rows for the items of a batch, through one interface (the `Reference`
protocol, `vlr.reference.protocol`): ``prepare(split_name, split, augmented)`` once per split, then
``embed(kind, split, batch)``. What the module does with the reference at each stage of a run
(building, evaluation rows, checkpoints) is `vlr.reference.lifecycle`.

``frozen_init`` copies the towers only when the objective distils from them during training.
For the others (InfoNCE, triplet) the reference serves overlap@k alone, so `InitialEvalRows`
embeds each evaluation split once with the towers as built, before the first step, and
keeps those rows (in checkpoints too, as ``vlr_reference_rows``) instead of a second copy of the towers.
"""

from __future__ import annotations

import copy
import hashlib
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


def split_fingerprint(split) -> str:
    """What identifies a split's rows: its images, captions and their pairing."""
    digest = hashlib.sha1()
    for part in (*map(str, split.image_paths), "\0", *split.captions, "\0", *map(str, split.text_to_image.tolist())):
        digest.update(part.encode("utf-8", "surrogatepass") + b"\n")
    return f"{split.num_images}x{split.num_captions}:{digest.hexdigest()[:16]}"


class InitialEvalRows(nn.Module):
    """The ``frozen_init`` reference when nothing distils from it during training: each
    evaluation split's rows, embedded once by the towers as built (`precompute`, called at
    ``setup`` by `vlr.reference.lifecycle.prepare_reference`: before the first step, and before
    a checkpoint's weights are loaded), then looked up by dataset index. No copy of the towers
    exists; the rows travel in checkpoints (``vlr_reference_rows``, next to the weights), keyed
    by split name and a fingerprint of the split's content, so a resumed run and ``vlr.eval``
    score against the rows the run started from, and a checkpoint evaluated on other data gets
    that data's rows from the towers as built."""

    kind = "frozen_init"

    def __init__(self, encoder: Any, cache: bool | str = "auto"):
        super().__init__()
        if cache not in CACHE_OPTIONS:  # the frozen_init option, checked alike (evaluation rows are always kept)
            raise ConfigError(f"reference.cache must be true, false or auto, got {cache!r}")
        self._source = (encoder,)  # the module's own encoder: a tuple, so it is not a submodule
        self.image_dim, self.text_dim = int(encoder.image_tower.out_dim), int(encoder.text_tower.out_dim)
        # split -> {"fingerprint": str, "image": rows, "text": rows}
        self._tables: dict[str, dict[str, Any]] = {}
        self.towers_trained = False  # set once the encoder's weights are no longer the initial ones

    def prepare(self, split_name: str, split, augmented: bool = False) -> None:
        """Nothing to do: evaluation rows come from `precompute`; training never asks."""

    def has_rows(self, split_name: str, fingerprint: str) -> bool:
        table = self._tables.get(split_name)
        return table is not None and table["fingerprint"] == fingerprint

    @torch.no_grad()
    def precompute(self, split_name: str, split, loaders, device: torch.device) -> None:
        """Embed all of ``split_name`` with the encoder's towers as they are now (the initial
        towers); ``loaders`` are the split's image and caption loaders, unsharded. The whole
        split, whatever the trainer's limits: a later full evaluation needs every row, and
        the towers will have trained by then."""
        first = next(iter(loaders[0]), None)  # the pixels as evaluation sees them (transform, degradation)
        pixels = hashlib.sha1(first["images"].float().numpy().tobytes()).hexdigest()[:12] if first else "none"
        fingerprint = f"{split_fingerprint(split)}:{pixels}"
        if self.has_rows(split_name, fingerprint):
            return
        if self.towers_trained:
            raise ConfigError(
                f"reference=frozen_init: the reference rows of the '{split_name}' split were not computed before "
                "the towers trained (nor kept in the checkpoint); evaluate through `python -m vlr.eval ckpt_path=...`, "
                "which embeds them with the towers as built, or use reference=features reference.path=<dir>"
            )
        encoder = self._source[0]
        towers = (encoder.image_tower, encoder.text_tower)
        modes = [tower.training for tower in towers]
        for tower in towers:
            tower.eval()
        table: dict[str, Any] = {"fingerprint": fingerprint}
        try:
            for kind, loader, size, dim in (
                ("image", loaders[0], split.num_images, self.image_dim),
                ("text", loaders[1], split.num_captions, self.text_dim),
            ):
                rows = torch.zeros(size, dim)
                for batch in loader:
                    if kind == "image":
                        out, index = towers[0](batch["images"].to(device)), batch["image_idx"]
                    else:
                        ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
                        out, index = towers[1](ids, mask), batch["caption_idx"]
                    rows[index] = F.normalize(out.float(), dim=-1).cpu()
                table[kind] = rows
        finally:
            for tower, mode in zip(towers, modes, strict=True):
                tower.train(mode)
        self._tables[split_name] = table

    @torch.no_grad()
    def embed(self, kind: str, split: str, batch: dict) -> torch.Tensor:
        index = batch["image_idx" if kind == "image" else "caption_idx"]
        table = self._tables.get(split)
        if table is None:
            raise RuntimeError(
                f"reference rows of split '{split}' were not precomputed: reference=frozen_init without a distilling "
                "objective embeds evaluation splits once, before training (vlr.reference.lifecycle.prepare_reference)"
            )
        if table[kind].device != index.device:
            table[kind] = table[kind].to(index.device)
        return table[kind][index]

    def rows_state(self) -> dict:
        """The rows, for a checkpoint (written as ``vlr_reference_rows``, `vlr.reference.lifecycle`)."""
        return {
            split: {k: v.cpu() if torch.is_tensor(v) else v for k, v in t.items()} for split, t in self._tables.items()
        }

    def load_rows_state(self, state: dict) -> None:
        """A checkpoint's rows; a split this module already embedded from other data keeps its own.
        Loading a checkpoint replaces the towers' weights, so no rows are computed after it."""
        for split, table in (state or {}).items():
            own = self._tables.get(split)
            if own is None or own["fingerprint"] == table["fingerprint"]:
                self._tables[split] = dict(table)
        self.towers_trained = True
