"""Write reference feature files for a dataset: ``python -m vlr.write_features [overrides]``.

Embeds every image and caption of each split with a timm image encoder (its own
eval transform, from timm's data config) and a transformers text encoder (its own
tokenizer), and writes ``<out_dir>/<split>.safetensors`` (see `vlr.reference.files`)
in annotation order, ready for ``reference=features``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from vlr.data import RetrievalDataModule
from vlr.data.datasets import Collate, EvalCaptions, EvalImages
from vlr.data.transforms import tower_transform
from vlr.errors import report_user_errors
from vlr.reference import save_features
from vlr.towers import build_tokenizer

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("sanitize", lambda s: re.sub(r"[^A-Za-z0-9._-]+", "_", str(s)), replace=True)


@torch.no_grad()
def _embed(encoder, loader: DataLoader, device: torch.device, what: str) -> torch.Tensor:
    rows = []
    for batch in tqdm(loader, desc=what, leave=False):
        if "images" in batch:
            rows.append(encoder(batch["images"].to(device)).float().cpu())
        else:
            rows.append(encoder(batch["input_ids"].to(device), batch["attention_mask"].to(device)).float().cpu())
    return torch.cat(rows)


def write_features(cfg: DictConfig) -> Path:
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if cfg.device == "auto" else cfg.device)
    datamodule: RetrievalDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.prepare_data()
    image_encoder = hydra.utils.instantiate(cfg.image_encoder, _convert_="all").to(device).eval()
    text_encoder = hydra.utils.instantiate(cfg.text_encoder, _convert_="all").to(device).eval()
    if not cfg.text_encoder.get("name_or_path"):
        raise ValueError(
            "text_encoder.name_or_path must name a pretrained model or local directory (its tokenizer is used)"
        )
    tokenizer = build_tokenizer(cfg.text_encoder.name_or_path)
    transform = tower_transform(image_encoder.data_config(), train=False)
    out_dir = Path(cfg.out_dir)
    meta = {
        "image_encoder": OmegaConf.to_container(cfg.image_encoder, resolve=True),
        "text_encoder": OmegaConf.to_container(cfg.text_encoder, resolve=True),
        "data": {"name": cfg.data.name, "root": str(cfg.data.root)},
    }
    loader = lambda ds: DataLoader(  # noqa: E731
        ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=Collate(tokenizer, cfg.max_length)
    )
    for split_name in cfg.splits:
        split = datamodule.split(split_name)
        image = _embed(image_encoder, loader(EvalImages(split, transform)), device, f"{split_name} images")
        text = _embed(text_encoder, loader(EvalCaptions(split)), device, f"{split_name} captions")
        path = save_features(out_dir, split_name, image, text, meta)
        log.info("%s: %d images x %d, %d captions x %d -> %s", split_name, *image.shape, *text.shape, path)
    print(f"reference features written to {out_dir}\n  train with: reference=features reference.path={out_dir}")
    return out_dir


@hydra.main(version_base="1.3", config_path="conf", config_name="write_features")
@report_user_errors
def main(cfg: DictConfig) -> None:
    write_features(cfg)


if __name__ == "__main__":
    main()
