"""Data sources by name (``data.source``): where a split's images and captions come from."""

from __future__ import annotations

from pathlib import Path

from vlr.data.corpus import CaptionSplit
from vlr.data.karpathy import read_karpathy
from vlr.data.synthetic import ANNOTATION, SyntheticSpec, generate_synthetic
from vlr.registry import Registry

SOURCES: Registry = Registry("data source")


@SOURCES.register("karpathy")
class KarpathySource:
    """A Karpathy ``dataset_*.json`` under ``root`` with images under ``root / filepath``."""

    def __init__(self, root: str, annotation: str, restval_to_train: bool = True):
        self.root = Path(root)
        self.annotation = self.root / annotation
        self.restval_to_train = restval_to_train

    def prepare(self) -> None:
        """Nothing to do for files the user already has."""

    def read(self, split: str) -> CaptionSplit:
        return read_karpathy(self.annotation, self.root, split, restval_to_train=self.restval_to_train)


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
        annotation: str | None = None,
        **kwargs,
    ):
        super().__init__(root, annotation or ANNOTATION, **kwargs)
        self.spec = SyntheticSpec(num_train, num_val, num_test, generator_seed, image_size, captions_per_image)

    def prepare(self) -> None:
        generate_synthetic(self.root, self.spec)
