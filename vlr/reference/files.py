"""Reference feature files: one per split, rows aligned with the annotation order.

A feature directory holds, for each split, either ``<split>.safetensors`` with tensors
``image`` [num_images, d_i] and ``text`` [num_captions, d_t], or the pair
``<split>_image.npy`` / ``<split>_text.npy``. Row k of ``image`` belongs to image k of
the split as `vlr.data` reads it (annotation order, ``restval`` joined to train where
configured) and row c of ``text`` to caption c. ``.npy`` files are read with
``allow_pickle=False`` and safetensors never unpickles, so a feature file cannot run code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save

from vlr.errors import UserError
from vlr.io import atomic_write, atomic_write_text

KINDS = ("image", "text")


class FeatureFileError(UserError, ValueError):
    """A reference feature file is missing, unreadable, or does not match its split."""


def feature_paths(directory: str | Path, split: str) -> dict[str, Path] | Path | None:
    """The existing files of ``split``: a safetensors path, an npy pair, or None."""
    directory = Path(directory)
    st = directory / f"{split}.safetensors"
    if st.is_file():
        return st
    npy = {kind: directory / f"{split}_{kind}.npy" for kind in KINDS}
    if all(p.is_file() for p in npy.values()):
        return npy
    return None


def _missing(directory: Path, split: str) -> FeatureFileError:
    return FeatureFileError(
        f"no reference features for split '{split}' in {directory}: expected {split}.safetensors "
        f"(tensors 'image' and 'text') or {split}_image.npy + {split}_text.npy. "
        f"Write them with `python -m vlr.write_features` (reference=features reference.path=<dir>)"
    )


def feature_dims(directory: str | Path, splits=("train", "val", "test")) -> tuple[int, int]:
    """(image dim, text dim) from the first split that has files, reading headers only."""
    directory = Path(directory)
    for split in splits:
        found = feature_paths(directory, split)
        if found is None:
            continue
        if isinstance(found, Path):
            with safe_open(str(found), framework="pt") as f:
                shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
            missing = [k for k in KINDS if k not in shapes]
            if missing:
                raise FeatureFileError(f"{found}: has no tensor {missing}; it holds {sorted(shapes)}")
            return int(shapes["image"][-1]), int(shapes["text"][-1])
        dims = [np.load(found[k], mmap_mode="r", allow_pickle=False).shape[-1] for k in KINDS]
        return int(dims[0]), int(dims[1])
    if not directory.is_dir():
        raise FeatureFileError(f"reference.path={directory}: no such directory")
    raise _missing(directory, splits[0])


def _read(found, kind: str) -> tuple[np.ndarray | torch.Tensor, Path]:
    if isinstance(found, Path):
        with safe_open(str(found), framework="pt") as f:
            if kind not in f.keys():
                raise FeatureFileError(f"{found}: has no tensor '{kind}'; it holds {sorted(f.keys())}")
            return f.get_tensor(kind), found
    path = found[kind]
    try:
        return np.load(path, allow_pickle=False), path
    except ValueError as err:  # object arrays need pickle: refused
        raise FeatureFileError(f"{path}: cannot be read without pickle ({err}); store a float array") from None


def _check_recorded_digest(directory: Path, split: str, found) -> None:
    """A safetensors file vlr wrote must still match the checksum recorded in ``meta.json`` then
    (a truncated copy or a file of other features fails here, naming the file)."""
    meta_path = directory / "meta.json"
    if not isinstance(found, Path) or not meta_path.is_file():
        return
    try:
        recorded = json.loads(meta_path.read_text()).get("splits", {}).get(split, {}).get("sha256")
    except (json.JSONDecodeError, AttributeError):
        raise FeatureFileError(f"{meta_path}: not valid JSON") from None
    if recorded and hashlib.sha256(found.read_bytes()).hexdigest() != recorded:
        raise FeatureFileError(
            f"{found}: does not match the checksum recorded in {meta_path.name} when it was written "
            "(truncated or replaced); write it again with `python -m vlr.write_features`"
        )


def load_features(directory: str | Path, split: str, num_images: int, num_captions: int) -> dict[str, torch.Tensor]:
    """Both feature matrices of ``split`` as float32, validated against the split's counts."""
    directory = Path(directory)
    found = feature_paths(directory, split)
    if found is None:
        raise _missing(directory, split)
    _check_recorded_digest(directory, split, found)
    out = {}
    for kind, expected in (("image", num_images), ("text", num_captions)):
        array, path = _read(found, kind)
        x = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        what = f"{path}" + (f" ['{kind}']" if path.suffix == ".safetensors" else "")
        if x.ndim != 2:
            raise FeatureFileError(f"{what}: expected a 2-D [rows, dim] array, got shape {tuple(x.shape)}")
        if not (x.is_floating_point()):
            raise FeatureFileError(f"{what}: expected floating-point features, got {x.dtype}")
        if x.shape[0] != expected:
            unit = "images" if kind == "image" else "captions"
            raise FeatureFileError(
                f"{what}: has {x.shape[0]} rows but split '{split}' has {expected} {unit}; "
                f"rows must follow the annotation order of that split"
            )
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).any(dim=1).nonzero()[0])
            raise FeatureFileError(f"{what}: row {bad} is not finite")
        out[kind] = x.float().contiguous()
    return out


def save_features(directory: str | Path, split: str, image: torch.Tensor, text: torch.Tensor, meta: dict) -> Path:
    """Write ``<split>.safetensors`` and merge ``meta`` into ``meta.json`` (what wrote it, for which data)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{split}.safetensors"
    data = save({"image": image.float().contiguous().cpu(), "text": text.float().contiguous().cpu()})
    atomic_write(path, lambda fh: fh.write(data), "reference features")  # never half a file where a run reads
    meta_path = directory / "meta.json"
    all_meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    all_meta.setdefault("splits", {})[split] = {
        "images": int(image.shape[0]),
        "captions": int(text.shape[0]),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    all_meta.update({k: v for k, v in meta.items() if k != "splits"})
    atomic_write_text(meta_path, json.dumps(all_meta, indent=2), "reference metadata")
    return path
