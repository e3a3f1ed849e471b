"""Build the datamodule and the model from a composed config (shared by train and eval).

Each piece is built whole, in dependency order: the imbalance; the image tower (the
datamodule needs its preprocessing); the datamodule, given the imbalance, the tokenizer
(or the factory that trains a WordPiece on its training captions) and that
preprocessing; the reference (``reference`` group; feature files may be written by the
data's preparation); the objective; and the module, given the towers, the objective and
the reference.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, cast

import hydra
from omegaconf import DictConfig, OmegaConf

from vlr.data import RetrievalDataModule
from vlr.errors import ConfigError
from vlr.imbalance import Imbalance
from vlr.models import RetrievalModule
from vlr.towers import build_tokenizer
from vlr.towers.tokenizer import OpenCLIPTokenizer


def as_dict(node: DictConfig) -> dict[str, Any]:
    """A config node as plain, resolved Python data."""
    return cast(dict[str, Any], OmegaConf.to_container(node, resolve=True))


# model-level keys a preset defines for its towers to interpolate (``model=open_clip``'s
# ``model.arch`` and ``model.pretrained``), and its name (``model.preset``, for run names)
PRESET_VARIABLES = ("arch", "pretrained", "preset")


def check_image_size(image_tower: Any, data_cfg: DictConfig) -> None:
    """A tower with positional embeddings for one image size (CLIP, open_clip) fed vlr's builtin
    transform at another size fails deep inside its forward; say so before anything runs."""
    if not getattr(image_tower, "fixed_input_size", False) or data_cfg.get("image_transform") == "tower":
        return
    size = tuple(image_tower.data_config()["input_size"][-2:])
    wanted = data_cfg.get("image_size")
    if wanted is not None and (int(wanted), int(wanted)) != size:
        raise ConfigError(
            f"data.image_size={wanted}, but the image tower takes {size[0]}x{size[1]} images: "
            "set data.image_transform=tower (its own preprocessing) or data.image_size to match"
        )


def trains_wordpiece(cfg: DictConfig) -> bool:
    """Whether ``model.tokenizer`` is a WordPiece trained on the training captions (no name, no open_clip arch)."""
    return not cfg.model.tokenizer.get("name_or_path") and not cfg.model.tokenizer.get("open_clip")


def tokenizer_for(cfg: DictConfig):
    """``model.tokenizer``: open_clip's tokenizer of an arch, a named tokenizer, or a factory of
    the training captions (WordPiece)."""
    tok_cfg = cfg.model.tokenizer
    if tok_cfg.get("open_clip"):
        return OpenCLIPTokenizer(tok_cfg.open_clip, tok_cfg.get("max_length"))
    if tok_cfg.name_or_path:
        return build_tokenizer(tok_cfg.name_or_path)
    return functools.partial(
        build_tokenizer, None, vocab_size=tok_cfg.vocab_size, cache_dir=Path(cfg.paths.cache_dir) / "tokenizers"
    )


def build_data_and_model(cfg: DictConfig) -> tuple[RetrievalDataModule, RetrievalModule]:
    imbalance: Imbalance = hydra.utils.instantiate(cfg.imbalance, _convert_="all")
    model_cfg = imbalance.apply_to_model_config(as_dict(cfg.model))
    for key in PRESET_VARIABLES:  # resolved into the towers' nodes above; not RetrievalModule arguments
        model_cfg.pop(key, None)
    image_tower = hydra.utils.instantiate(model_cfg.pop("image_tower"), _convert_="all")
    tower_data_config = image_tower.data_config() if cfg.data.get("image_transform") == "tower" else None
    check_image_size(image_tower, cfg.data)
    datamodule: RetrievalDataModule = hydra.utils.instantiate(
        cfg.data,
        imbalance=imbalance,
        tokenizer=tokenizer_for(cfg),
        max_length=cfg.model.tokenizer.max_length,
        tower_data_config=tower_data_config,
        _convert_="all",
    )
    datamodule.prepare_data()  # idempotent and lock-protected: safe on every DDP rank
    if model_cfg["text_tower"].get("config") is not None:  # a tower built from a config: the tokenizer's vocabulary
        model_cfg["text_tower"]["vocab_size"] = len(datamodule.tokenizer)
    if cfg.get("relevance") is not None:  # what NDCG is graded by (vlr.metrics.relevance): the evaluator's choice
        model_cfg.setdefault("evaluation", {})["relevance"] = as_dict(cfg.relevance)
    reference = hydra.utils.instantiate(cfg.reference, _convert_="all")
    objective = hydra.utils.instantiate(cfg.objective, _convert_="all")
    model: RetrievalModule = hydra.utils.instantiate(
        OmegaConf.create(model_cfg), image_tower=image_tower, objective=objective, reference=reference, _convert_="all"
    )
    return datamodule, model
