"""`debug=` presets (after lightning-hydra-template) run end to end, evaluation included."""

import json

import pytest

from tests.conftest import SYNTHETIC_ROOT_SPEC, run_cli

pytestmark = pytest.mark.slow


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
    proc = run_cli(
        "vlr.train",
        f"debug={preset}",
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.batch_size=10",
        "data.eval_batch_size=8",
        *extra,
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["test/rsum"] <= 600 and "test/t2t/scene_NDCG@10" in metrics
    out = proc.stdout + proc.stderr
    assert ("test metrics are over a limited pass" in out) == limited
    assert not (run_dir / "csv").exists() and not (run_dir / "wandb").exists()  # the debug presets log nothing
    if preset == "profiler":
        assert "FIT Profiler Report" in out
    if preset == "fdr":  # Lightning's fast_dev_run: one step, no best checkpoint, the current weights tested
        assert "testing the current weights" in out
