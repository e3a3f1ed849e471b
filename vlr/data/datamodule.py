"""`RetrievalDataModule`: training pairs plus the two evaluation loaders for any data source."""

from __future__ import annotations

import inspect
import math
import os

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from vlr.data.checks import BAD_IMAGE_POLICIES, check_contained, check_images, warn_shared_images
from vlr.data.corpus import CaptionSplit
from vlr.data.datasets import Collate, EvalCaptions, EvalImages, TrainPairs
from vlr.data.sampler import EpochSampler
from vlr.data.sources import SOURCES
from vlr.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform, tower_transform
from vlr.data.workers import WorkerInit
from vlr.errors import ConfigError

TRAIN_SAMPLING = ("caption", "image")
IMAGE_TRANSFORMS = ("builtin", "tower")


class RetrievalDataModule(pl.LightningDataModule):
    """Image-caption data for retrieval training and evaluation.

    ``batch_size`` is the **global** training batch: each of the ``world_size``
    processes loads ``batch_size // world_size``. Evaluation loaders go over unique
    images and over all captions, every item with its index in the split.

    Complete when constructed: ``imbalance`` (a `vlr.imbalance.Imbalance`, applied to the
    splits it names), ``tokenizer`` (a tokenizer, or a factory called once with the training
    captions after `prepare_data`, for a WordPiece trained on them) with ``max_length``,
    and ``tower_data_config`` (the image tower's preprocessing, for ``image_transform=tower``).
    `vlr.build` passes them in from the composed config.
    """

    def __init__(
        self,
        name: str,
        source: str,
        root: str,
        annotation: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 2,
        shuffle: bool = True,
        augment: bool = True,
        cache_images: bool = False,
        train_sampling: str = "caption",
        paired_captions: bool = False,
        image_transform: str = "builtin",
        image_size: int = 224,
        mean: tuple = IMAGENET_MEAN,
        std: tuple = IMAGENET_STD,
        eval_folds: int = 1,
        eval_tiers: dict | None = None,
        cache_dir: str | None = None,
        on_bad_sample: str = "error",
        on_bad_image: str | None = None,
        verify: bool = False,
        allow_outside_root: bool = False,
        imbalance=None,
        tokenizer=None,
        max_length: int = 32,
        tower_data_config: dict | None = None,
        **source_kwargs,
    ):
        super().__init__()
        for option, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{option} must be a positive integer, got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        if train_sampling not in TRAIN_SAMPLING:
            raise ValueError(f"data.train_sampling must be one of {TRAIN_SAMPLING}, got '{train_sampling}'")
        if image_transform not in IMAGE_TRANSFORMS:
            raise ValueError(f"data.image_transform must be one of {IMAGE_TRANSFORMS}, got '{image_transform}'")
        if cache_images and augment:
            raise ConfigError(
                "data.cache_images=true needs data.augment=false: augmented training images differ every epoch"
            )
        for option, policy in (("on_bad_sample", on_bad_sample), ("on_bad_image", on_bad_image)):
            if policy is not None and policy not in BAD_IMAGE_POLICIES:
                raise ConfigError(f"data.{option} must be one of {BAD_IMAGE_POLICIES}, got '{policy}'")
        on_bad_image = on_bad_sample if on_bad_image is None else on_bad_image
        self.name = name
        self.paired_captions = bool(paired_captions)
        self.train_sampling, self.image_transform, self.on_bad_image, self.verify = (
            train_sampling,
            image_transform,
            on_bad_image,
            verify,
        )
        self.root, self.allow_outside_root = root, bool(allow_outside_root)  # vlr.data.checks.check_contained
        self.tower_data_config = dict(tower_data_config) if tower_data_config is not None else None
        source_kwargs = {k: v for k, v in source_kwargs.items() if v is not None}  # presets null what they lack
        if "on_bad_sample" in inspect.signature(SOURCES.get(source)).parameters:  # sources that read records
            source_kwargs["on_bad_sample"] = on_bad_sample
        self.source = SOURCES.create(source, root=root, annotation=annotation, **source_kwargs)
        # per split, the records left out under data.on_bad_sample/on_bad_image=skip (the run summary's
        # data/bad_samples/<split>); empty under "error", where a bad record stops the run
        self.bad_samples: dict[str, int] = {}
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers, self.shuffle, self.augment = num_workers, shuffle, augment
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)
        self.eval_folds, self.cache_dir = eval_folds, cache_dir
        # test-split gallery tiers from one embedding pass, e.g. COCO {5k: 1, 1k: 5} (name -> folds)
        self.eval_tiers = dict(eval_tiers) if eval_tiers else None
        self._tokenizer, self.max_length = tokenizer, max_length
        self.imbalance = imbalance
        self.splits: dict[str, CaptionSplit] = {}
        # data.cache_images: each split's images after weakening and transform, by index (in this
        # process; loader workers would each fill their own copy)
        self.image_cache: dict[str, dict] | None = {} if cache_images else None
        # (epoch, training batches of it taken so far): travels in checkpoints (state_dict), so a
        # run resumed in the middle of an epoch continues its order where it stopped
        self.trained_in_epoch = (0, 0)

    # -- data preparation -------------------------------------------------------------
    def prepare_data(self) -> None:
        self.source.prepare()

    @property
    def tokenizer(self):
        """The tokenizer; a factory given to the constructor is called here, once, with the
        training captions (so after `prepare_data` has made them available)."""
        if self._tokenizer is None:
            raise ConfigError(
                "RetrievalDataModule needs a tokenizer (its tokenizer= argument; vlr.build passes model.tokenizer's)"
            )
        if not hasattr(self._tokenizer, "convert_tokens_to_ids"):  # a factory of the training captions
            self._tokenizer = self._tokenizer(self.train_captions())
        return self._tokenizer

    def split(self, name: str) -> CaptionSplit:
        """The split as training and evaluation see it: images checked (``on_bad_image``,
        ``verify``; under ``skip`` the images left out are counted in ``bad_samples``),
        imbalance applied where it applies."""
        if name not in self.splits:
            split = check_contained(self.source.read(name), self.root, self.allow_outside_root)
            listed = split.num_images
            # an evaluation image that fails mid-evaluation cannot be left out (the gallery is fixed
            # by then): under skip, val/test images are decoded here, once, and bad ones dropped
            decode = self.verify or (self.on_bad_image == "skip" and name != "train")
            split = check_images(split, self.on_bad_image, decode)
            if self.on_bad_image == "skip":
                records = getattr(self.source, "bad_records", None)  # left out when the source was indexed
                self.bad_samples[name] = listed - split.num_images + (records(name) if records else 0)
            if self.imbalance is not None and self.imbalance.applies_to(name):
                train = split if name == "train" else self.source.read("train")
                vocab = sorted({w for toks in (train.tokens or [c.split() for c in train.captions]) for w in toks})
                split = self.imbalance.apply_split(split, vocab)
            self.splits[name] = split
        return self.splits[name]

    def _cache(self, split_name: str) -> dict | None:
        return None if self.image_cache is None else self.image_cache.setdefault(split_name, {})

    def _degrader(self, split_name: str):
        return None if self.imbalance is None else self.imbalance.image_degrader(split_name)

    def setup(self, stage: str | None = None) -> None:
        self.tokenizer  # noqa: B018 -- fails now, in one line, when there is none
        world = self.trainer.world_size if self.trainer is not None else 1
        if self.batch_size % world:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is the global batch and must be divisible by the "
                f"world size ({world} processes)"
            )
        warn_shared_images(
            {name: self.split(name) for name in ("train", "val", "test") if stage in (None, "fit") or name != "train"}
        )
        self.per_rank_batch = self.batch_size // world

    def eval_targets(self, split_name: str) -> dict:
        """What the evaluator needs besides embeddings: caption->image map, labels, the captions."""
        split = self.split(split_name)
        if split.num_images < 2:
            raise ConfigError(
                f"the {split_name} split of {split.source or self.name} has {split.num_images} image(s); "
                "retrieval evaluation needs at least 2"
            )
        return {
            "text_to_image": split.text_to_image,
            "image_labels": split.labels,
            # for the relevance the module builds (vlr.metrics.relevance): data knows no metric
            "captions": split.tokens if split.tokens is not None else split.captions,
            "num_images": split.num_images,
            "cache_dir": None if self.cache_dir is None else f"{self.cache_dir}/rouge",
            # for scene relevance and CxC's human ratings (vlr.metrics.relevance)
            "scenes": split.scenes,
            "caption_ids": split.caption_ids,
            "image_names": [p.name for p in split.image_paths],
            "source": split.source or self.name,
            "folds": self.eval_folds,
            "tiers": self.eval_tiers if split_name == "test" else None,
        }

    # -- loaders ----------------------------------------------------------------------
    def _loader(self, dataset, batch_size: int, drop_last: bool, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=Collate(self.tokenizer, self.max_length),
            # workers leave SIGTERM/SIGINT to the main process (a scheduler signals the whole group)
            worker_init_fn=WorkerInit(self.trainer.global_rank if self.trainer is not None else 0),
            # worker seeds from their own generator, not the global RNG dropout draws from
            generator=torch.Generator().manual_seed(int(os.environ.get("PL_GLOBAL_SEED", 0))),
        )

    def _transform(self, train: bool):
        if self.image_transform == "builtin":
            return build_transform(self.image_size, train, self.augment, self.mean, self.std)
        if self.tower_data_config is None:
            raise ConfigError(
                "data.image_transform=tower needs the image tower's preprocessing (RetrievalDataModule's "
                "tower_data_config argument, which vlr.build passes); or set data.image_transform=builtin"
            )
        return tower_transform(self.tower_data_config, train and self.augment)

    def _train_dataset(self) -> TrainPairs:
        return TrainPairs(
            self.split("train"),
            self._transform(True),
            self._degrader("train"),
            per_image=self.train_sampling == "image",
            skip_bad=self.on_bad_image == "skip",
            paired_captions=self.paired_captions,
            cache=self._cache("train"),
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),  # the run seed (seed_everything sets it)
        )

    def train_batches_per_epoch(self) -> int:
        """Batches per epoch on each rank, within ``trainer.limit_train_batches``, without building
        a loader: the scheduler's length. (Lightning's ``estimated_stepping_batches`` would iterate
        the loader before a resume restores the loop state, and the resumed epoch would restart
        from its first batch.)"""
        world = self.trainer.world_size if self.trainer is not None else 1
        return self._within_limit(math.ceil(len(self._train_dataset()) / world) // self.per_rank_batch)

    def _within_limit(self, batches: int) -> int:
        """``batches`` cut by ``trainer.limit_train_batches`` (a count, or a fraction below 1)."""
        limit = getattr(self.trainer, "limit_train_batches", None) if self.trainer is not None else None
        if isinstance(limit, int):
            return min(batches, limit)
        if limit is not None and limit < 1.0:
            return int(batches * limit)
        return batches

    def train_dataloader(self) -> DataLoader:
        dataset = self._train_dataset()
        seed = dataset.seed
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        sampler = EpochSampler(dataset, self.shuffle, seed, world, rank)
        self._continue_epoch(sampler)
        # drop_last: every step sees a full global batch, so all ranks gather equal shapes
        return self._loader(dataset, self.per_rank_batch, True, sampler=sampler)

    def _continue_epoch(self, sampler: EpochSampler) -> None:
        """A resumed run continues the restored epoch's order, minus its batches already trained.

        Lightning asks for the loader after it has restored the checkpoint (this module's
        `state_dict` included) and creates the iterator before it tells the sampler the epoch
        (and it does not skip batches of a plain loader): the sampler learns both here."""
        trainer = self.trainer
        if trainer is None or getattr(getattr(trainer, "state", None), "fn", None) != "fit":
            return  # no loop to continue (a loader built outside trainer.fit)
        sampler.set_epoch(trainer.current_epoch)
        epoch, done = self.trained_in_epoch
        done = done if epoch == trainer.current_epoch else 0
        per_epoch = self._within_limit(len(sampler) // self.per_rank_batch)
        sampler.skip_items = done * self.per_rank_batch if 0 < done < per_epoch else 0

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count the training batches each epoch takes: Lightning calls this once per batch it
        trains on (not for those its fetcher reads ahead), so at every checkpoint the count is
        the batches that checkpoint's weights have seen."""
        trainer = self.trainer
        if trainer is not None and trainer.training:
            epoch, done = self.trained_in_epoch
            self.trained_in_epoch = (trainer.current_epoch, done + 1 if epoch == trainer.current_epoch else 1)
        return batch

    def state_dict(self) -> dict:
        epoch, done = self.trained_in_epoch
        return {"epoch": epoch, "trained_batches": done}

    def load_state_dict(self, state_dict: dict) -> None:
        self.trained_in_epoch = (int(state_dict["epoch"]), int(state_dict["trained_batches"]))

    def _eval_loaders(self, split_name: str) -> list[DataLoader]:
        split = self.split(split_name)
        return [
            self._loader(
                EvalImages(split, self._transform(False), self._degrader(split_name), self._cache(split_name)),
                self.eval_batch_size,
                False,
            ),
            self._loader(EvalCaptions(split), self.eval_batch_size, False),
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def train_captions(self) -> list[str]:
        """The training captions before any imbalance: the tokenizer's vocabulary is then the
        same at every imbalance level of a study."""
        return self.source.read("train").captions
