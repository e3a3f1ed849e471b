"""Shards vs folders (issue 31): loader speed on the same photos, and memory against split size.

- Speed: the photos of `loader_bench` (``../shared/data/flickr8k-1k`` when there, else
  generated 500 x 375 JPEGs) as a folder and as shards written by `vlr.data.shards`, each
  read for one epoch through vlr's training dataset (224-px tower preprocessing with the
  training crop, 2 loader workers); rounds alternate and the best of each is kept.
  ``shards_vs_folder_loader_time`` = shard seconds / folder seconds (<= 1.11: >= 0.9 x the
  folder's samples/s).
- Memory: generated splits of 10,000 and 100,000 tiny image-caption samples; a fresh process
  per size builds the shards datamodule (index from its cache), sets it up for training and
  reads 20 batches; ``shards_rss_100k_vs_10k`` = its peak resident memory at 100k / at 10k
  (<= 1.10: flat in the split's size).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from experiments.bench.loader_bench import SHARED, _generated

REPO = Path(__file__).resolve().parents[2]
PHOTOS, BATCH, WORKERS, ROUNDS = 384, 64, 2, 2
SIZES = (10_000, 100_000)


class _Encoded:
    """An in-memory JPEG the shard writer reads like a file (``read_bytes``, name)."""

    def __init__(self, name: str, data: bytes):
        self.name, self.data = name, data

    def read_bytes(self) -> bytes:
        return self.data

    def __str__(self) -> str:
        return self.name


def _photos(tmp: Path):
    from vlr.data.karpathy import read_karpathy

    if (SHARED / "dataset_flickr8k.json").exists():
        split = read_karpathy(SHARED / "dataset_flickr8k.json", SHARED / "images", "train")
        source = "flickr8k-1k photos"
    else:
        root = _generated(tmp / "photos")
        split, source = read_karpathy(root / "dataset.json", root / "images", "train"), "generated 500x375 JPEGs"
    return split.keep_images(list(range(min(PHOTOS, split.num_images)))), source


def _epoch_seconds(split, transform) -> float:
    from vlr.data.datasets import TrainPairs

    loader = DataLoader(
        TrainPairs(split, transform, per_image=False),
        batch_size=BATCH,
        num_workers=WORKERS,
        collate_fn=lambda items: torch.stack([it["image"] for it in items]),
    )
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def _speed(tmp: Path) -> tuple[dict, str]:
    import timm

    from vlr.data.shards import ShardsSource, write_split
    from vlr.data.transforms import tower_transform
    from vlr.towers.image_tower import timm_data_config

    folder, source = _photos(tmp)
    write_split(folder, tmp / "shards", "train", shard_size=128)
    shards = ShardsSource(str(tmp / "shards"), {"train": "train-*.tar"}).read("train")
    transform = tower_transform(timm_data_config(timm.create_model("vit_base_patch16_224", pretrained=False)), True)
    best = {"folder": float("inf"), "shards": float("inf")}
    for _ in range(ROUNDS):
        for name, split in (("folder", folder), ("shards", shards)):
            best[name] = min(best[name], _epoch_seconds(split, transform))
    items = folder.num_captions
    figures = {f"shards_loader_{k}_samples_per_s": round(items / v, 1) for k, v in best.items()}
    figures["shards_loader_ratio"] = round(best["folder"] / best["shards"], 3)
    return {"figures": figures, "ratios": {"shards_vs_folder_loader_time": best["shards"] / best["folder"]}}, source


def _write_generated(out: Path, n: int) -> None:
    from vlr.data.corpus import CaptionSplit
    from vlr.data.shards import write_split

    rng = np.random.default_rng(0)
    tiles = []
    for _ in range(64):  # 64 distinct 16x16 JPEGs, reused: the index, not the pixels, is measured
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        tiles.append(buffer.getvalue())
    images = [_Encoded(f"{i}.jpg", tiles[i % 64]) for i in range(n)]
    captions = [f"a generated picture number {i} with {i % 7} shapes" for i in range(n)]
    split = CaptionSplit("train", images, captions, torch.arange(n))  # type: ignore[arg-type]
    write_split(split, out, "train", shard_size=10_000)


def resident(root: str, cache: str) -> dict:
    """Run in a fresh process: the training side of ``data=shards`` on ``root``, peak RSS."""
    from vlr.data import RetrievalDataModule
    from vlr.towers import build_tokenizer

    words = [f"{w}" for w in "a generated picture number with shapes".split()] + [str(i) for i in range(10)]
    dm = RetrievalDataModule(
        name="shards",
        source="shards",
        root=root,
        splits={"train": "train-*.tar", "val": "train-000000.tar", "test": "train-000000.tar"},
        index_cache=cache,
        batch_size=BATCH,
        num_workers=0,
        image_size=16,
        augment=False,
        tokenizer=build_tokenizer(None, words, vocab_size=64),
        max_length=16,
    )
    dm.setup("fit")
    for k, _ in enumerate(dm.train_dataloader()):
        if k == 20:
            break
    with open("/proc/self/status") as fh:
        status = dict(line.split(":", 1) for line in fh)
    return {"peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024, "samples": len(dm._train_dataset())}


def _memory(tmp: Path) -> dict:
    figures = {}
    for n in SIZES:
        root, cache = tmp / f"gen{n}", tmp / f"cache{n}"
        _write_generated(root, n)
        code = (
            "import json; from experiments.bench.shards_bench import resident; "
            f"print(json.dumps(resident({str(root)!r}, {str(cache)!r})))"
        )
        for _ in range(2):  # the first builds the index cache (a one-off scan); the second is measured
            out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True)
        got = json.loads(out.stdout.strip().splitlines()[-1])
        assert got["samples"] == n, got
        figures[f"shards_peak_rss_mib_{n // 1000}k"] = round(got["peak_rss_mib"], 1)
    small, large = (figures[f"shards_peak_rss_mib_{n // 1000}k"] for n in SIZES)
    ratio = large / small
    # the absolute growth says more than the ratio over a process that imports torch and timm
    figures["shards_rss_added_bytes_per_sample"] = round((large - small) * 2**20 / (SIZES[1] - SIZES[0]), 1)
    return {"figures": figures, "ratios": {"shards_rss_100k_vs_10k": ratio}}


def run(tmp: Path) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    speed, source = _speed(tmp)
    memory = _memory(tmp)
    return {
        "figures": {**speed["figures"], **memory["figures"]},
        "ratios": {**speed["ratios"], **memory["ratios"]},
        "notes": {
            "shards": f"speed: {source}, {PHOTOS} images x their captions, 224-px training preprocessing, "
            f"{WORKERS} workers, best of {ROUNDS}; memory: generated {SIZES[0]:,} vs {SIZES[1]:,} samples, "
            "peak RSS of a fresh process (index cached), 20 batches"
        },
    }
