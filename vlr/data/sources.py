"""Data sources by name (``data.source``): where a split's images and captions come from."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from vlr.data.coco_captions import read_coco_captions
from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import read_karpathy
from vlr.data.lavis import read_lavis
from vlr.data.shards.source import ShardsSource
from vlr.data.synthetic import ANNOTATION, GENERATOR_VERSION, SyntheticSpec, generate_synthetic
from vlr.data.vizwiz import read_vizwiz
from vlr.registry import Registry

SOURCES: Registry = Registry("data source")


@SOURCES.register("karpathy")
class KarpathySource:
    """A Karpathy ``dataset_*.json`` under ``root``; images at ``root / image_dir / filepath / filename``."""

    def __init__(self, root: str, annotation: str, restval_to_train: bool = True, image_dir: str = ""):
        self.root = Path(root)
        self.annotation = self.root / annotation
        self.restval_to_train, self.image_root = restval_to_train, self.root / image_dir

    def prepare(self) -> None:
        """Nothing to do for files the user already has."""

    def read(self, split: str) -> CaptionSplit:
        return read_karpathy(self.annotation, self.image_root, split, restval_to_train=self.restval_to_train)


def _per_split(option: str, files: dict | None, split: str) -> str:
    if not files or split not in files or not files[split]:
        raise ValueError(f"data.{option} has no entry for split '{split}' (it has {sorted(files or {})})")
    return files[split]


@SOURCES.register("coco_captions")
class CocoCaptionsSource:
    """Official COCO captions files, one per split (``data.annotations``), images in
    ``root / image_dirs[split]``; optional ``instances`` files give multi-hot i2i labels."""

    def __init__(self, root: str, annotations: dict, image_dirs: dict, instances: dict | None = None, annotation=None):
        self.root, self.annotations, self.image_dirs, self.instances = (
            Path(root),
            annotations,
            image_dirs,
            instances or {},
        )

    def prepare(self) -> None:
        """Nothing to do for files the user already has."""

    def read(self, split: str) -> CaptionSplit:
        instances = self.instances.get(split)
        return read_coco_captions(
            self.root / _per_split("annotations", self.annotations, split),
            self.root / _per_split("image_dirs", self.image_dirs, split),
            split,
            instances_path=self.root / instances if instances else None,
        )


@SOURCES.register("lavis")
class LavisSource:
    """ALBEF/BLIP/LAVIS annotation lists, one per split (``data.annotations``), images under ``root / image_root``."""

    def __init__(self, root: str, annotations: dict, image_root: str = "", annotation=None):
        self.root, self.annotations, self.image_root = Path(root), annotations, image_root

    def prepare(self) -> None:
        """Nothing to do for files the user already has."""

    def read(self, split: str) -> CaptionSplit:
        return read_lavis(
            self.root / _per_split("annotations", self.annotations, split), self.root / self.image_root, split
        )


@SOURCES.register("vizwiz")
class VizWizSource:
    """VizWiz-Captions' official files (see `vlr.data.vizwiz`): rejected and pre-canned
    captions dropped unless told otherwise, val held out of the train file, test = official val."""

    def __init__(self, root: str, annotations: dict, image_dirs: dict, annotation=None, **options: Any):
        self.root, self.annotations, self.image_dirs = Path(root), annotations, image_dirs
        known = set(inspect.signature(read_vizwiz).parameters) - {"root", "split", "annotations", "image_dirs"}
        if set(options) - known:
            raise TypeError(f"unexpected keyword argument(s) {sorted(set(options) - known)}; known: {sorted(known)}")
        self.options = options  # val_images, drop_rejected, drop_precanned (read_vizwiz's defaults)

    def prepare(self) -> None:
        """Nothing to do for files the user already has."""

    def read(self, split: str) -> CaptionSplit:
        return read_vizwiz(self.root, split, self.annotations, self.image_dirs, **self.options)


@SOURCES.register("synthetic")
class SyntheticSource(KarpathySource):
    """The embedded default: generated on first use into ``root`` (see `vlr.data.synthetic`)."""

    def __init__(
        self,
        root: str,
        num_train: int = 1500,
        num_val: int = 250,
        num_test: int = 250,
        generator_seed: int = 0,
        image_size: int = 64,
        captions_per_image: int = 5,
        generator_version: int = GENERATOR_VERSION,
        reference_images: int = 0,
        annotation: str | None = None,
        **kwargs,
    ):
        super().__init__(root, annotation or ANNOTATION, **kwargs)
        self.spec = SyntheticSpec(
            num_train,
            num_val,
            num_test,
            generator_seed,
            image_size,
            captions_per_image,
            int(generator_version),
            int(reference_images),
        )

    def prepare(self) -> None:
        generate_synthetic(self.root, self.spec)


# tar shards (img2dataset's layout), read map-style through an index: vlr.data.shards
SOURCES.register("shards")(ShardsSource)
