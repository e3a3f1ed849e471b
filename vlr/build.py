"""Build the datamodule, tokenizer, objective and model from a composed config (shared by train and eval)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from vlr.data import RetrievalDataModule
from vlr.imbalance import Imbalance
from vlr.models import RetrievalModule, build_tokenizer


def build_data_and_model(cfg: DictConfig) -> tuple[RetrievalDataModule, RetrievalModule]:
    datamodule: RetrievalDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    imbalance: Imbalance = hydra.utils.instantiate(cfg.imbalance, _convert_="all")
    datamodule.set_imbalance(imbalance)
    datamodule.prepare_data()  # idempotent and lock-protected: safe on every DDP rank

    tok_cfg = cfg.model.tokenizer
    tokenizer = build_tokenizer(
        tok_cfg.name_or_path,
        train_texts=None if tok_cfg.name_or_path else datamodule.train_captions(),
        vocab_size=tok_cfg.vocab_size,
        cache_dir=Path(cfg.paths.cache_dir) / "tokenizers",
    )
    datamodule.set_tokenizer(tokenizer, tok_cfg.max_length)

    objective = hydra.utils.instantiate(cfg.objective, _convert_="all")
    model_cfg = OmegaConf.create(imbalance.apply_to_model_config(OmegaConf.to_container(cfg.model, resolve=True)))
    if model_cfg.text_tower.get("config") is not None:
        with open_dict(model_cfg):
            model_cfg.text_tower.vocab_size = len(tokenizer)
    model: RetrievalModule = hydra.utils.instantiate(model_cfg, objective=objective, _convert_="all")
    if datamodule.image_transform == "tower":
        datamodule.set_tower_data_config(model.encoder.image_tower.data_config())
    return datamodule, model
