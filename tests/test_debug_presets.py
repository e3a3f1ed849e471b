"""`debug=` presets (after lightning-hydra-template) run end to end, evaluation included."""

import pytest

from tests.conftest import SYNTHETIC_ROOT_SPEC, run_vlr

pytestmark = pytest.mark.slow  # in-process training runs


@pytest.mark.parametrize(
    "preset, extra, limited",
    [
        ("fdr", [], True),  # one batch of each loader: a partial evaluation
        ("limit", ["trainer.max_epochs=2"], True),
        ("overfit", ["trainer.max_epochs=1"], False),  # the test loader is not limited by overfit_batches
        # full evaluation loaders: an ordinary evaluation (3 training steps: the profiler's report is the point)
        ("profiler", ["++trainer.limit_train_batches=3"], False),
    ],
)
def test_debug_presets_train_and_evaluate(tmp_path, synthetic_root, preset, extra, limited):
    run_dir = tmp_path / "run"
    run = run_vlr(
        "train",
        f"debug={preset}",
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.batch_size=10",
        "data.eval_batch_size=8",
        *extra,
        dir=run_dir,
    )
    assert run.returncode == 0, run.output[-3000:]
    metrics = run.metrics
    recalls = sum(metrics[f"test/{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert metrics["test/rsum"] == pytest.approx(recalls, abs=1e-3) and "test/t2t/scene_NDCG@10" in metrics
    out = run.output
    assert ("test metrics are over a limited pass" in out) == limited
    assert not (run_dir / "csv").exists() and not (run_dir / "wandb").exists()  # the debug presets log nothing
    if preset == "profiler":
        assert "FIT Profiler Report" in out
    if preset == "fdr":  # Lightning's fast_dev_run: one step, no best checkpoint, the current weights tested
        assert "testing the current weights" in out
