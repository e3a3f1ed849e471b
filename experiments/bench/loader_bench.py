"""Loader throughput: images/s through decode + transform, by ``data.num_workers``.

Photos: the real Flickr8k sample (``../shared/data/flickr8k-1k``, short side 256) when it
is there, else generated JPEGs of Flickr's typical 500 x 375. The transform is the
tower preprocessing of a 224-px timm ViT (resize + centre crop, and the training crop).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data" / "flickr8k-1k"
IMAGES, BATCH, WORKERS = 384, 64, (0, 2)


def _generated(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(IMAGES):
        base = rng.integers(0, 255, (24, 32, 3)).astype(np.uint8)  # smooth photo-like content
        Image.fromarray(base).resize((500, 375), Image.BICUBIC).save(tmp / "images" / f"{i}.jpg", quality=90)
        entries.append({"filename": f"{i}.jpg", "split": "train", "sentences": [{"raw": "a photo"}]})
    (tmp / "dataset.json").write_text(json.dumps({"images": entries}))
    return tmp


def run(tmp: Path) -> dict:
    import timm

    from vlr.data.datasets import EvalImages, TrainPairs
    from vlr.data.karpathy import read_karpathy
    from vlr.data.transforms import tower_transform
    from vlr.towers.image_tower import timm_data_config

    if (SHARED / "dataset_flickr8k.json").exists():
        split, source = (
            read_karpathy(SHARED / "dataset_flickr8k.json", SHARED / "images", "train"),
            "flickr8k-1k photos",
        )
    else:
        root = _generated(tmp)
        split, source = read_karpathy(root / "dataset.json", root / "images", "train"), "generated 500x375 JPEGs"
    split.image_paths = split.image_paths[:IMAGES]
    config = timm_data_config(timm.create_model("vit_base_patch16_224", pretrained=False))
    figures = {}
    for name, dataset in (
        ("eval", EvalImages(split, tower_transform(config, False))),
        ("train", TrainPairs(split, tower_transform(config, True))),
    ):
        dataset_len = min(len(dataset), IMAGES)
        for workers in WORKERS:
            loader = DataLoader(
                dataset, batch_size=BATCH, num_workers=workers, collate_fn=lambda items: [it["image"] for it in items]
            )
            start, seen = time.perf_counter(), 0
            for batch in loader:
                seen += len(batch)
                if seen >= dataset_len:
                    break
            figures[f"loader_{name}_images_per_s_workers{workers}"] = round(seen / (time.perf_counter() - start), 1)
    return {"figures": figures, "notes": {"loader": f"{source}, 224-px timm ViT preprocessing, batch {BATCH}"}}
