"""Training step time: Lightning vs a bare PyTorch loop, and each objective vs InfoNCE.

Lightning vs bare: same towers, same batches, same optimizer.
Both run the module's own optimizer and schedule on batches already in memory, so
the difference is the framework (hooks, logging, loop bookkeeping). Objectives: the Lightning step of
each objective on the same towers
and batches, divided by InfoNCE's. Steady state:
the first ``WARMUP`` steps are not timed. Rounds alternate so drift hits both equally.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
STEPS, WARMUP, ROUNDS = 12, 3, 3


# name -> overrides: each objective (and CoVLR's cheaper mode) on the same towers and batches
OBJECTIVES = {
    "infonce": ["objective=infonce"],
    "triplet": ["objective=triplet"],
    "covlr": ["objective=covlr"],
    "covlr_projections": ["objective=covlr", "objective.virtual_params=projections"],
    "relation_kd": ["objective=relation_kd"],
    "sad": ["objective=sad", "objective.stage1_epochs=0"],  # the stage-2 step: every term
}


def _model_and_batches(tmp: Path, objective: list[str] = ("objective=infonce",), batch_size: int = 128):
    from vlr.build import build_data_and_model

    os.environ.setdefault("VLR_ROOT", str(REPO))
    with initialize_config_dir(config_dir=str(REPO / "vlr" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "logger=none",
                f"hydra.run.dir={tmp}",
                "data.num_workers=0",
                *objective,
                "data.augment=false",
                "data.shuffle=false",
            ],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    pl.seed_everything(0)
    datamodule, model = build_data_and_model(cfg)
    datamodule.setup("fit")
    # no trainer.fit(datamodule=...) does it here; augmentation is off (data.augment=false): cached
    model.reference.prepare("train", datamodule.split("train"), augmented=False)
    loader = datamodule.train_dataloader()
    batches = [b for _, b in zip(range(STEPS), loader, strict=False)]
    assert all(b["images"].shape[0] == batch_size for b in batches)
    return cfg, model, batches


class _StepTimer(pl.Callback):
    """Wall time from the start of batch ``warmup`` to the end of the last batch."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.end = time.perf_counter()


def lightning_step_seconds(
    model, batches: list, warmup: int = WARMUP, accelerator: str = "cpu", precision: str = "32-true"
) -> float:
    """Mean Lightning training-step time over ``batches`` (already in memory), the first
    ``warmup`` steps untimed."""
    timer = _StepTimer(warmup)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=len(batches),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        precision=precision,
    )
    trainer.fit(model, train_dataloaders=DataLoader(batches, batch_size=None, shuffle=False))
    return (timer.end - timer.start) / (len(batches) - warmup)


def _bare(model, batches) -> float:
    model.train()
    optimizer = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]},
            {"params": [p for p in model.parameters() if p.requires_grad and p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=1e-3,
        weight_decay=0.05,
    )
    for i, batch in enumerate(batches):
        if i == WARMUP:
            start = time.perf_counter()
        v = model.embed_images(batch["images"])
        t = model.embed_texts(batch["input_ids"], batch["attention_mask"])
        loss = torch.stack(list(model.objective(v, t, batch["image_idx"]).values())).sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / (STEPS - WARMUP)


def run(tmp: Path) -> dict:
    _, model, batches = _model_and_batches(tmp)
    models = {name: _model_and_batches(tmp, overrides)[1] for name, overrides in OBJECTIVES.items()}
    bare, light = [], []
    per_objective = {name: [] for name in OBJECTIVES}
    for _ in range(ROUNDS):
        bare.append(_bare(model, batches))
        light.append(lightning_step_seconds(model, batches))
        for name in OBJECTIVES:
            per_objective[name].append(lightning_step_seconds(models[name], batches))
    b, lit = statistics.median(bare), statistics.median(light)
    step = {name: statistics.median(times) for name, times in per_objective.items()}
    return {
        "ratios": {
            "framework_vs_bare": lit / b,
            **{f"{name}_vs_infonce": step[name] / step["infonce"] for name in OBJECTIVES if name != "infonce"},
        },
        "figures": {
            "train_step_bare_seconds": b,
            "train_step_lightning_seconds": lit,
            **{f"train_step_{name}_seconds": t for name, t in step.items()},
        },
        "notes": {
            "framework_vs_bare": f"model=tiny, batch 128, {STEPS - WARMUP} timed steps x {ROUNDS} alternating "
            "rounds, median",
            "objectives": "Lightning step per objective, same towers and batches (model=tiny, batch 128); "
            "covlr first-order, all parameters in the virtual step (covlr_projections: projections only, "
            "tower outputs reused)",
        },
    }
