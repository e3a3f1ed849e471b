"""`vlr.eval` as users call it: zero-shot, transfer to other data, per-query rankings, bad checkpoints."""

import json

import pytest
from safetensors.torch import load_file

from tests.conftest import run_cli

pytestmark = pytest.mark.slow
SMALL = [
    "data.num_train=30",
    "data.num_val=12",
    "data.num_test=15",
    "data.batch_size=30",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "logger=none",
    "seed=2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalcli")
    proc = run_cli("vlr.train", *SMALL, "save_rankings=true", f"hydra.run.dir={root / 'run'}", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, root / "run" / "checkpoints" / "best.ckpt"


def _eval(root, name, *overrides):
    out = root / name
    proc = run_cli("vlr.eval", *overrides, f"hydra.run.dir={out}", cwd=root)
    return proc, out


def test_training_writes_rankings_that_reproduce_the_metrics(trained):
    root, _ = trained
    metrics = json.loads((root / "run" / "metrics.json").read_text())
    r = load_file(str(root / "run" / "rankings.safetensors"))
    assert r["t2i/topk"].shape == (75, 10) and r["i2t/topk"].shape == (15, 10) and r["text_to_image"].shape == (75,)
    for d in ("i2t", "t2i", "t2t"):
        for k in (1, 5, 10):
            per_query = r[f"{d}/R@{k}"]
            assert 100 * float(per_query[~per_query.isnan()].mean()) == pytest.approx(
                metrics[f"test/{d}/R@{k}"], abs=1e-4
            )
    assert 100 * float(r["i2i/scene_NDCG@10"].mean()) == pytest.approx(metrics["test/i2i/scene_NDCG@10"], abs=1e-4)
    # top-1 is the caption's own image whenever its R@1 is certain, and never when it is 0
    first = r["t2i/topk"][:, 0] == r["text_to_image"]
    assert bool(first[r["t2i/R@1"] == 1.0].all()) and not bool(first[r["t2i/R@1"] == 0.0].any())
    assert bool((r["t2i/R@1"] == 1.0).any()) and bool((r["t2i/R@1"] == 0.0).any())


def test_zero_shot_evaluates_the_towers_as_built(trained):
    root, _ = trained
    proc, out = _eval(root, "zs", "data.num_train=30", "data.num_val=12", "data.num_test=15", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "zero-shot" in proc.stdout + proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    info = json.loads((out / "evaluation.json").read_text())
    assert info["checkpoint"] == "none (zero-shot)"
    # random towers: near chance, never the 600 of ties given to the query
    assert metrics["test/rsum"] < 250


def test_a_data_group_chosen_on_the_command_line_wins_over_the_run(trained):
    root, ckpt = trained
    other = root / "other-data"
    proc, out = _eval(
        root,
        "transfer",
        f"ckpt_path={ckpt}",
        "data=synthetic",
        f"data.root={other}",
        "data.num_train=10",
        "data.num_val=10",
        "data.num_test=12",
        "data.generator_seed=9",
        "data.num_workers=0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / "evaluation.json").read_text())
    assert info["chance"]["test/t2i/R@1"] == pytest.approx(100 / 12)  # the 12 test images chosen here, not the run's 15
    assert (other / "dataset_synthetic.json").exists() or any(other.rglob("dataset_synthetic.json"))


def test_a_checkpoint_that_does_not_fit_names_the_tensors(trained):
    root, ckpt = trained
    proc, out = _eval(root, "mismatch", f"ckpt_path={ckpt}", "model.embed_dim=32", "data.num_workers=0")
    assert proc.returncode == 1
    line = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert len(line) == 1 and "does not fit the configured model" in line[0]
    assert "encoder.image_proj.weight shape (64, 96) vs model (32, 96)" in line[0]
    assert "Traceback" not in proc.stderr and not (out / "metrics.json").exists()


def test_a_file_that_is_not_a_checkpoint_is_named(trained):
    root, _ = trained
    bogus = root / "notes.ckpt"
    bogus.write_text("not a checkpoint")
    proc, _ = _eval(root, "bogus", f"ckpt_path={bogus}")
    assert proc.returncode == 1
    assert f"error: ckpt_path={bogus} is not a readable checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr
