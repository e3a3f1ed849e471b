"""The suite's one real multi-process run: ``vlr.train trainer=ddp_cpu`` (2 processes, global batch B)
ends with the weights of the same run on 1 process (batch B), and shares one run directory.

SAD in two stages: epoch 0 ITC only, then every term from the best stage-1 checkpoint, which every
rank must restore. Shuffling, augmentation and dropout are off, so both runs draw the same data.
SGD with momentum, not AdamW: some parameters (the key part of a ViT's qkv bias) have an exactly
zero true gradient, and Adam normalises the remaining float rounding noise into full-size steps.
What crosses ranks inside each objective is checked exactly, in one process, by
`tests/objectives/test_gather_ddp.py`; the evaluator's sync by `tests/metrics/test_evaluator.py`.
"""

import csv
import json

import pytest
import torch

from experiments.ddp_drift import DETERMINISTIC
from tests.conftest import compose_config, run_cli, run_vlr

# 60 captions / batch 20 = 3 steps an epoch; stage 2 starts at epoch 1
ARGS = ["data.num_train=12", *DETERMINISTIC, "objective=sad", "objective.stage1_epochs=1", "trainer.max_epochs=2"]


@pytest.mark.slow
def test_two_processes_equal_one_and_share_one_run_directory(tmp_path):
    two_dir = tmp_path / "two"
    proc = run_cli("vlr.train", *ARGS, "trainer=ddp_cpu", f"hydra.run.dir={two_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = run_vlr("train", *ARGS, "test=false", dir=tmp_path / "one")
    assert one.returncode == 0, one.output[-3000:]

    # one run directory: rank 1 made none of its own and wrote no stray checkpoint
    assert sorted(p.name for p in (two_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not (tmp_path / "outputs").exists()
    assert "stage 2 starts from the best stage-1 checkpoint" in proc.stdout + proc.stderr

    w1, w2 = one.checkpoint()["state_dict"], torch.load(two_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert w2["global_step"] == one.checkpoint()["global_step"] == 6
    w2 = w2["state_dict"]
    assert w1.keys() == w2.keys()
    initial = _initial_weights(tmp_path)
    moved = 0
    for key in w1:
        assert torch.allclose(w1[key].double(), w2[key].double(), atol=1e-5, rtol=0), key
        moved += key.startswith("encoder.") and not torch.equal(w2[key], initial[key].to(w2[key].dtype))
    assert moved > 10  # training really changed the weights (and they started equal)

    # what the 2 processes logged for validation = a 1-process evaluation of their last weights
    logged = [r for r in csv.DictReader(open(two_dir / "csv" / "metrics.csv")) if r.get("val/rsum")][-1]
    single = run_vlr("eval", f"ckpt_path={two_dir / 'checkpoints' / 'last.ckpt'}", "split=val", dir=tmp_path / "eval")
    assert single.returncode == 0, single.output[-3000:]
    assert "val/rsum" in single.metrics
    for key, value in single.metrics.items():
        assert float(logged[key]) == pytest.approx(value, abs=1e-4), key
    tested = json.loads((two_dir / "metrics.json").read_text())
    want = sum(tested[f"test/{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert tested["test/rsum"] == pytest.approx(want, abs=1e-3)


def _initial_weights(tmp_path) -> dict:
    """The weights before training: the same config and seed, built in this process."""
    import lightning.pytorch as pl

    from vlr.build import build_data_and_model

    cfg = compose_config(*ARGS, run_dir=tmp_path / "initial", root=tmp_path)
    pl.seed_everything(cfg.seed)
    return build_data_and_model(cfg)[1].state_dict()
