"""A few-step training run through the real CLI, as a user types it: ``python -m vlr.train``, then
``python -m vlr.eval`` of its best checkpoint (the suite's two runs of the entry points as processes;
their output goes to a pipe, as under nohup or SLURM)."""

import csv
import json
import math
import re

import pytest
import torch
import yaml

from tests.conftest import run_cli
from tests.test_following_runs import EPOCH_LINE
from vlr.tracking.wandb_files import read_run

SMALL = [
    "data.num_train=40",
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=20",
    "data.num_workers=0",
    "trainer.max_epochs=2",
    "seed=1",
]
CROSS = ["i2t", "t2i"]


def _brute_force_test_metrics(run_dir, root) -> dict:
    """The run's best checkpoint, rebuilt in this process from the run's own command line (its
    ``.hydra/overrides.yaml``), embeds the test split; the brute-force reference
    (tests/metrics/brute_force.py: full score matrices, argsort per query) scores it. An
    independent computation of what the CLI wrote."""
    from hydra.core.hydra_config import HydraConfig

    from tests.conftest import compose_config
    from tests.metrics.brute_force import brute_force_metrics
    from vlr.build import build_data_and_model

    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    try:
        datamodule, model = build_data_and_model(compose_config(*overrides, run_dir=run_dir, root=root))
    finally:
        HydraConfig.instance().cfg = None
    state = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    model.load_state_dict(model.loadable_state_dict(state))
    model.eval()
    datamodule.setup("test")
    images, captions = datamodule.test_dataloader()
    with torch.no_grad():
        img = torch.cat([model.embed_images(b["images"]) for b in images])
        txt = torch.cat([model.embed_texts(b["input_ids"], b["attention_mask"]) for b in captions])
    t2i = datamodule.eval_targets("test")["text_to_image"]
    return brute_force_metrics(img.numpy(), txt.numpy(), t2i.numpy())


def _check_metrics(metrics: dict, n_test: int):
    for d in CROSS:
        assert 0.0 <= metrics[f"test/{d}/R@1"] <= metrics[f"test/{d}/R@5"] <= metrics[f"test/{d}/R@10"] <= 100.0
        assert 1.0 <= metrics[f"test/{d}/medr"] <= n_test * 5
    for d in ("t2t", "i2i"):
        assert 0.0 <= metrics[f"test/{d}/R@1"] <= metrics[f"test/{d}/R@5"] <= metrics[f"test/{d}/R@10"] <= 100.0
        for k in (10, 20, 50):
            assert 0.0 <= metrics[f"test/{d}/scene_NDCG@{k}"] <= 100.0  # synthetic data: graded by its scenes
    assert metrics["test/rsum"] == pytest.approx(
        sum(metrics[f"test/{d}/R@{k}"] for d in CROSS for k in (1, 5, 10)), abs=1e-3
    )
    assert metrics["test/rsum_single"] == pytest.approx(
        metrics["test/i2i/scene_NDCG@10"] + metrics["test/t2t/scene_NDCG@10"], abs=1e-3
    )
    for m in ("image", "text"):
        assert 0.0 <= metrics[f"test/{m}/overlap@10"] <= 1.0


@pytest.mark.slow
def test_train_writes_run_directory_and_eval_reproduces_it(tmp_path):
    run_dir = tmp_path / "run"
    # the CLI itself, in a fresh interpreter: what a user's `python -m` prints, import-time warnings too
    proc = run_cli("vlr.train", *SMALL, "logger=[csv,wandb]", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # generated on first use, in a folder named after its spec
    assert (tmp_path / "data" / "synthetic" / "40-15-15_seed0_64px_5cap_v3_r0" / "dataset_synthetic.json").exists()
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (run_dir / ".hydra" / name).exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and (run_dir / "checkpoints" / "best.ckpt").exists()
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)  # plain data only
    assert ckpt["epoch"] in (0, 1)

    written = json.loads((run_dir / "metrics.json").read_text())
    assert all(k.startswith(("test/", "val/")) for k in written)
    metrics = {k: v for k, v in written.items() if k.startswith("test/")}
    _check_metrics(metrics, 15)
    reference = _brute_force_test_metrics(run_dir, tmp_path)
    for key in ("i2t/R@1", "i2t/R@5", "i2t/R@10", "t2i/R@1", "t2i/R@5", "t2i/R@10", "i2t/medr", "t2i/medr", "rsum"):
        assert metrics[f"test/{key}"] == pytest.approx(reference[key], abs=1e-3), key
    info = json.loads((run_dir / "evaluation.json").read_text())
    assert info["ties"] == "expected" and info["split"] == "test"
    assert info["chance"]["test/t2i/R@1"] == pytest.approx(100 / 15)  # a constant model on 15 images
    assert "rsum_single" in proc.stdout and "i2t" in proc.stdout  # the console table
    # stdout is a pipe, not a terminal (nohup, SLURM): one plain line per epoch, the run folder at
    # the start and where the results are at the end, the same lines in Hydra's train.log
    for text in (proc.stdout, (run_dir / "train.log").read_text()):
        assert len(EPOCH_LINE.findall(text)) == 2, text[-3000:]
        assert f"run folder: {run_dir.resolve()}" in text
        assert f"done: metrics {run_dir.resolve() / 'metrics.json'}" in text

    rows = list(csv.DictReader(open(run_dir / "csv" / "metrics.csv")))
    val = [r for r in rows if r.get("val/rsum")]
    assert len(val) == 2 and all(math.isfinite(float(r["val/rsum"])) for r in val)
    # the val numbers reported are the best epoch's (the one best.ckpt holds), not the last epoch's
    best_row = max(val, key=lambda r: float(r["val/rsum"]))  # first maximum, as ModelCheckpoint keeps it
    assert int(best_row["epoch"]) == ckpt["epoch"]
    for key in ("val/rsum", "val/rsum_single", "val/i2t/R@1"):
        assert written[key] == pytest.approx(float(best_row[key]), abs=1e-4), key
    assert any(r.get("train/loss/itc_i2t") for r in rows) and any(r.get("train/temperature") for r in rows)
    wandb_runs = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 1 and wandb_runs[0].stat().st_size > 0
    # the run's name and tags carry every factor of a comparison, imbalance strength included
    run = read_run(wandb_runs[0])
    # ...and "-v<hash>" when other overrides (here the smaller data) make it a variant of its cell
    assert re.fullmatch(r"infonce-synthetic-tiny-none0\.0-s1-v[0-9a-f]{6}", run.name), run.name
    assert run.group == "synthetic-tiny-infonce-none0.0-" + run.name.rsplit("-", 1)[1]
    assert {"strength:0.0", "model:tiny", "objective:infonce", "seed:1"} <= set(run.tags)
    # the summary holds each val metric's best (max; min for ranks), not the last epoch's
    best = {k: max(float(r[k]) for r in val) for k in ("val/rsum", "val/i2t/R@1")}
    assert run.summary["val/rsum"] == {"max": pytest.approx(best["val/rsum"], abs=1e-4)}
    assert run.summary["val/i2t/R@1"] == {"max": pytest.approx(best["val/i2t/R@1"], abs=1e-4)}
    assert run.summary["val/t2i/medr"] == {"min": min(float(r["val/t2i/medr"]) for r in val)}
    # the learning rate of each parameter group, every step, in W&B and in metrics.csv
    lr_rows = [h for h in run.history if "lr-AdamW/decay" in h]
    assert len(lr_rows) == sum(1 for r in rows if r.get("lr-AdamW/decay")) > 0
    assert all(0 < h["lr-AdamW/no_decay"] <= 1e-3 for h in lr_rows)
    # parameter counts per part, in the run config
    model = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    towers = sum(v.numel() for k, v in model.items() if k.startswith("encoder.image_tower."))
    assert run.config["params/image_tower/trainable"] == towers and run.config["params/image_tower/frozen"] == 0
    assert run.config["params/total/trainable"] > towers
    # known third-party noise is silenced at its source (vlr/tracking/noise.py, vlr.tracking.loggers.WandbLogger)
    out = proc.stdout + proc.stderr
    for noise in ("💡 Tip", "LeafSpec", "anonymous setting has no effect", "module(s) in eval mode"):
        assert noise not in out, noise

    # vlr.eval on the best checkpoint reproduces the test metrics, reading the run's own config
    eval_dir = tmp_path / "eval"
    proc = run_cli(
        "vlr.eval",
        f"ckpt_path={run_dir}/checkpoints/best.ckpt",
        "data.num_workers=0",
        f"hydra.run.dir={eval_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((eval_dir / "metrics.json").read_text())
    # what was evaluated, for compare: the run's groups (eval's own .hydra/config.yaml is eval's composition)
    evaluated = yaml.safe_load((eval_dir / "evaluated_config.yaml").read_text())
    assert evaluated["data"]["num_train"] == 40 and evaluated["seed"] == 1 and evaluated["task_name"] == "eval"
    assert again.keys() == metrics.keys()
    for key in metrics:
        assert again[key] == pytest.approx(metrics[key], abs=1e-4), key
