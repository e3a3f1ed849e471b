"""What each objective costs on real-size towers: one training step per objective, CPU, batch 32.

``vit_bert`` (timm ViT-B/16 at 224 px + BERT-base, new 256-d projections) and
``clip_vit_b32`` (CLIP ViT-B/32 image and text models, CLIP's own 512-d projections),
both built from their architecture configs with random weights (nothing is downloaded),
with the presets' optimizers (AdamW). Batches are random tensors of the presets' shapes
(224-px images; 40 BERT tokens, 77 CLIP tokens), every pair its own image. The reference
is ``frozen_init`` (recomputed every step, as with augmented images). Each objective's
step is timed through Lightning after ``WARMUP`` steps, in rounds that alternate the
objectives, and reported as its ratio to InfoNCE's step on the same towers.

The memory section (`run_memory`) builds CLIP ViT-B/32 the same way at batch 16 and
measures step time and peak resident memory (model, optimizer state and activations) with
and without gradient checkpointing, and with and without a frozen copy of the towers as
reference: InfoNCE, which distils nothing, no longer builds one (``with_copy`` forces the
copy every objective carried before); SAD needs it.

Set ``VLR_BENCH_REAL_STEPS`` to time more steps (default 2 per round, 1 round: a real-size
step takes tens of seconds on 2 cores).

On a GPU: ``python -m experiments.bench.real_towers --gpu`` times CLIP ViT-B/32 at batch 256
under bf16-mixed and records images/s and peak allocated memory per objective and per
memory case in ``experiments/bench/gpu.json`` (not part of ``make bench``, which runs on the CPU).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from experiments.bench.memory import measure
from experiments.bench.train_bench import lightning_step_seconds
from vlr.reference import FrozenInitReference

REPO = Path(__file__).resolve().parents[2]
BATCH, WARMUP = 32, 1
STEPS = int(os.environ.get("VLR_BENCH_REAL_STEPS", 2))
ROUNDS = int(os.environ.get("VLR_BENCH_REAL_ROUNDS", 1))

OBJECTIVES = {
    "infonce": ("infonce", {}),
    "triplet": ("triplet", {}),
    "covlr": ("covlr", {}),
    "covlr_projections": ("covlr", {"virtual_params": "projections"}),
    "relation_kd": ("relation_kd", {}),
    "sad": ("sad", {"stage1_epochs": 0}),  # the stage-2 step: every term
}


def _towers(preset: str):
    from vlr.towers import CLIPImageTower, CLIPTextTower, ImageTower, TextTower

    if preset == "vit_bert":
        image = ImageTower("vit_base_patch16_224", pretrained=False)
        text = TextTower(config={"model_type": "bert"})  # BertConfig() is BERT-base
        return image, text, 256, (30522, 40)
    image, text = CLIPImageTower(config={}), CLIPTextTower(config={})  # CLIPConfig() is ViT-B/32
    return image, text, None, (49408, 77)


def _towers_embed_dim(preset: str) -> int | None:
    return 256 if preset == "vit_bert" else None


def _objective(name: str, options: dict):
    cfg = OmegaConf.load(REPO / "vlr" / "conf" / "objective" / f"{name}.yaml")
    for key, value in options.items():
        cfg[key] = value
    return instantiate(cfg)


def _batches(vocab: int, length: int, steps: int, batch: int = BATCH) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(steps):
        ids = torch.randint(1000, vocab - 1, (batch, length), generator=g)
        ids[:, -1] = vocab - 1  # CLIP pools at the highest id (its end-of-text token)
        out.append(
            {
                "images": torch.randn(batch, 3, 224, 224, generator=g),
                "input_ids": ids,
                "attention_mask": torch.ones(batch, length, dtype=torch.long),
                "image_idx": torch.arange(batch),
                "caption_idx": torch.arange(batch),
            }
        )
    return out


def _module(preset: str, name: str, options: dict, grad_checkpointing: bool = False, copy: bool = False):
    from vlr.models import RetrievalModule

    image, text, embed_dim, _ = _towers(preset)
    optimizer = OmegaConf.load(REPO / "vlr" / "conf" / "model" / f"{preset}.yaml").optimizer
    # the frozen initial towers, recomputed every step (as with augmented training images); an
    # objective that distils nothing gets evaluation rows only, unless ``copy`` forces the copy
    reference = functools.partial(FrozenInitReference, cache=False)
    return RetrievalModule(
        image,
        text,
        _objective(name, options),
        embed_dim=embed_dim,
        optimizer=instantiate(optimizer),
        reference=(lambda encoder: reference(encoder)) if copy else reference,
        grad_checkpointing=grad_checkpointing,
    )


MEMORY_BATCH = 16
# case -> (objective, options, gradient checkpointing, force a frozen copy of the towers)
MEMORY_CASES = {
    "infonce": ("infonce", {}, False, False),
    "infonce_with_copy": ("infonce", {}, False, True),
    "infonce_grad_ckpt": ("infonce", {}, True, False),
    "sad": ("sad", {"stage1_epochs": 0}, False, False),
    "sad_grad_ckpt": ("sad", {"stage1_epochs": 0}, True, False),
}


def run(tmp: Path | None = None, presets=("clip_vit_b32", "vit_bert")) -> dict:
    ratios, figures = {}, {}
    for preset in presets:
        batches = _batches(*_towers(preset)[3], WARMUP + STEPS)
        # CLIP keeps its joint space (identity projections): covlr_projections is refused there
        names = [n for n in OBJECTIVES if not (n == "covlr_projections" and _towers_embed_dim(preset) is None)]
        times = {name: [] for name in names}
        for _ in range(ROUNDS):
            for name in names:
                objective, options = OBJECTIVES[name]
                pl.seed_everything(0, verbose=False)
                module = _module(preset, objective, options)
                times[name].append(lightning_step_seconds(module, batches, WARMUP))
                del module
                gc.collect()
        step = {name: statistics.median(t) for name, t in times.items()}
        for name, seconds in step.items():
            figures[f"real_{preset}_step_{name}_seconds"] = seconds
            if name != "infonce":
                ratios[f"real_{preset}_{name}_vs_infonce"] = seconds / step["infonce"]
    return {
        "ratios": ratios,
        "figures": figures,
        "notes": {
            "real_towers": f"random-weight towers from config (vit_bert: ViT-B/16 224 px + BERT-base, 256-d; "
            f"clip_vit_b32: CLIP ViT-B/32, 512-d), CPU, batch {BATCH}, AdamW, frozen_init reference recomputed "
            f"per step; {STEPS} timed steps after {WARMUP} warm-up x {ROUNDS} round(s), median",
        },
    }


def memory_case(case: str) -> dict:
    """One case in this process: step seconds and the peak resident memory it added."""
    objective, options, checkpointing, copy = MEMORY_CASES[case]
    batches = _batches(*_towers("clip_vit_b32")[3], WARMUP + STEPS, MEMORY_BATCH)
    pl.seed_everything(0, verbose=False)
    with measure() as used:  # from before the towers are built: weights, copy, optimizer, activations
        module = _module("clip_vit_b32", objective, options, checkpointing, copy)
        seconds = lightning_step_seconds(module, batches, WARMUP)
    return {"step_seconds": seconds, "peak_gib": used["peak_added_gib"]}


def run_memory(tmp: Path | None = None) -> dict:
    """CLIP ViT-B/32 from config, CPU, batch 16: step time and peak resident memory per case,
    each case in a fresh process (freed memory stays in the allocator's arenas, so a second
    case in the same process would read a peak below its true one)."""
    figures, ratios = {}, {}
    for case in MEMORY_CASES:
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.bench.real_towers", "--memory-case", case],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory case {case} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        figures[f"real_clip_vit_b32_bs16_{case}_step_seconds"] = result["step_seconds"]
        figures[f"real_clip_vit_b32_bs16_{case}_peak_gib"] = result["peak_gib"]
    for case, base in (("infonce_with_copy", "infonce"), ("infonce_grad_ckpt", "infonce"), ("sad_grad_ckpt", "sad")):
        for what in ("peak_gib", "step_seconds"):
            short = "memory" if what == "peak_gib" else "time"
            ratios[f"real_clip_vit_b32_bs16_{case}_{short}_vs_{base}"] = (
                figures[f"real_clip_vit_b32_bs16_{case}_{what}"] / figures[f"real_clip_vit_b32_bs16_{base}_{what}"]
            )
    return {
        "ratios": ratios,
        "figures": figures,
        "notes": {
            "real_towers_memory": f"CLIP ViT-B/32 from config (random weights), CPU fp32, batch {MEMORY_BATCH}, AdamW, "
            "each case in a fresh process; peak resident memory added from before the towers are built (weights, "
            f"reference copy, optimizer state, activations; /proc VmHWM); {STEPS} timed steps after {WARMUP} "
            "warm-up. with_copy: a frozen copy of the towers, as every objective carried before this version; "
            "grad_ckpt: model.grad_checkpointing=true",
            "real_towers_gpu": (
                "not run: " + ("make bench runs on the CPU" if torch.cuda.is_available() else "no CUDA device")
            )
            + "; `python -m experiments.bench.real_towers --gpu` records CLIP ViT-B/32 at batch 256, bf16 (images/s, "
            "peak memory per objective and memory case) in experiments/bench/gpu.json",
        },
    }


def run_gpu(batch: int = 256, steps: int = 5) -> dict:
    """CLIP ViT-B/32, bf16-mixed, one GPU: images/s and peak allocated GiB per objective."""
    batches = _batches(*_towers("clip_vit_b32")[3], WARMUP + steps, batch)

    def measured(objective: str, options: dict, checkpointing: bool = False, copy: bool = False) -> dict:
        pl.seed_everything(0, verbose=False)
        torch.cuda.reset_peak_memory_stats()
        module = _module("clip_vit_b32", objective, options, checkpointing, copy)
        seconds = lightning_step_seconds(module, batches, WARMUP, accelerator="gpu", precision="bf16-mixed")
        peak = torch.cuda.max_memory_allocated() / 2**30
        del module
        gc.collect()
        torch.cuda.empty_cache()
        return {"images_per_s": batch / seconds, "step_seconds": seconds, "peak_allocated_gib": peak}

    # covlr_projections: CLIP's identity projections, refused
    out = {name: measured(*spec) for name, spec in OBJECTIVES.items() if name != "covlr_projections"}
    memory = {case: measured(*spec) for case, spec in MEMORY_CASES.items()}
    return {
        "objectives": out,
        "memory_cases": memory,
        "device": torch.cuda.get_device_name(),
        "batch": batch,
        "precision": "bf16-mixed",
        "timed_steps": steps,
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--gpu", action="store_true", help="CLIP ViT-B/32, bf16, batch 256 on one GPU")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--memory-case", choices=sorted(MEMORY_CASES), help="one CPU memory case (run_memory's worker)")
    args = parser.parse_args()
    if args.memory_case:
        print(json.dumps(memory_case(args.memory_case)))
        return
    if not args.gpu:
        print(json.dumps(run(), indent=2))
        return
    if not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device is visible")
    result = run_gpu(args.batch)
    path = Path(__file__).resolve().parent / "gpu.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
