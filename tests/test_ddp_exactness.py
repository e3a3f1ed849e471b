"""The suite's one real multi-process run: a Hydra sweep of two ``vlr.train trainer=ddp_cpu`` jobs
(2 processes each, global batch B). Each job's ranks share one directory (the sweep is not re-run
by the second rank, which would happen with Lightning's own re-launch of ``sys.argv``), the second
job starts after the first released its process group, and a job ends with the weights of the same
run on 1 process (batch B).

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
ARGS = [
    "data.num_train=12",
    *(o for o in DETERMINISTIC if not o.startswith("seed=")),
    "objective=sad",
    "objective.stage1_epochs=1",
    "trainer.max_epochs=2",
]


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_equals_one_process_and_writes_one_directory_per_job(tmp_path):
    sweep = tmp_path / "multi"
    proc = run_cli("vlr.train", "-m", "seed=5,6", *ARGS, "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "stage 2 starts from the best stage-1 checkpoint" in proc.stdout + proc.stderr
    # one directory per job, shared by its ranks: none wandered off to a run directory of its own,
    # re-ran the sweep, or wrote a stray checkpoint
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, seed in (("0", 5), ("1", 6)):
        assert sorted(p.name for p in (sweep / job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert f"seed: {seed}" in (sweep / job / ".hydra" / "config.yaml").read_text()
        assert (sweep / job / "metrics.json").is_file()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()

    two_dir = sweep / "0"
    one = run_vlr("train", *ARGS, "seed=5", "test=false", dir=tmp_path / "one")
    assert one.returncode == 0, one.output[-3000:]

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
    # `vlr.eval` itself on 2 ranks (the odd-sized val split divides unevenly between them): every
    # metric equals the 1-process evaluation's, and both ranks write into one eval folder
    eval_dir = tmp_path / "eval2"
    ckpt = two_dir / "checkpoints" / "last.ckpt"
    ranks = run_cli(
        "vlr.eval", f"ckpt_path={ckpt}", "split=val", "trainer=ddp_cpu", f"hydra.run.dir={eval_dir}", cwd=tmp_path
    )
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert not (tmp_path / "outputs").exists()
    on_two = json.loads((eval_dir / "metrics.json").read_text())
    assert on_two.keys() == single.metrics.keys()
    for key, value in single.metrics.items():
        assert on_two[key] == pytest.approx(value, abs=1e-3), key
    tested = json.loads((two_dir / "metrics.json").read_text())
    want = sum(tested[f"test/{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert tested["test/rsum"] == pytest.approx(want, abs=1e-3)


def _initial_weights(tmp_path) -> dict:
    """The weights before training: the same config and seed, built in this process."""
    import lightning.pytorch as pl

    from vlr.build import build_data_and_model

    cfg = compose_config(*ARGS, "seed=5", run_dir=tmp_path / "initial", root=tmp_path)
    pl.seed_everything(cfg.seed)
    return build_data_and_model(cfg)[1].state_dict()
