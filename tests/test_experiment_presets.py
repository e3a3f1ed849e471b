"""The real-data presets compose and start: a few steps with a tiny stand-in CLIP on generated data."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def _train_preset(tmp_path, synthetic_root, preset, objective, *towers):
    """Two CPU steps of ``experiment=<preset>`` on the synthetic data's Karpathy file: (run dir, metrics)."""
    run_dir = tmp_path / "run"
    proc = run_cli(
        "vlr.train",
        f"experiment={preset}",
        f"data.root={synthetic_root}",
        "data.annotation=dataset_synthetic.json",
        "data.image_dir=",
        *towers,
        "trainer=cpu",
        "trainer.precision=32-true",
        "trainer.max_steps=2",
        f"objective={objective}",
        "data.batch_size=10",
        "data.num_workers=0",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize(
    "preset, objective",
    [("flickr30k_clip", "infonce"), ("coco_clip", "infonce"), ("flickr30k_clip", "sad"), ("flickr30k_clip", "covlr")],
)
def test_real_data_preset_starts_with_tiny_towers(tmp_path, synthetic_root, tiny_clip, preset, objective):
    """Every structure objective too: SAD's heads take CLIP's joint-space size (embed_dim: null)."""
    run_dir, metrics = _train_preset(
        tmp_path, synthetic_root, preset, objective, f"model.image_tower.name_or_path={tiny_clip['dir']}"
    )
    tiers = ["5k/", "1k/"] if preset == "coco_clip" else [""]  # COCO: both test tiers from one pass
    for tier in tiers:
        assert f"test/{tier}rsum" in metrics and f"test/{tier}t2t/rouge_l_NDCG@10" in metrics
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "CLIPImageTower" in config and "image_transform: tower" in config and "FrozenInitReference" in config


@pytest.mark.parametrize("objective", ["infonce", "sad"])
def test_open_clip_preset_trains_and_evaluates_from_local_files(tmp_path, synthetic_root, tiny_open_clip, objective):
    """``experiment=flickr30k_open_clip`` with a tiny local architecture and checkpoint; then
    ``vlr.eval`` of the best checkpoint gives the run's own test numbers."""
    towers = [f"model.arch={tiny_open_clip['arch']}", f"model.pretrained={tiny_open_clip['pretrained']}"]
    run_dir, metrics = _train_preset(tmp_path, synthetic_root, "flickr30k_open_clip", objective, *towers)
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "OpenCLIPImageTower" in config and "image_transform: tower" in config
    assert not (run_dir / "tokenizer").exists()  # open_clip's own tokenizer: nothing trained to keep
    proc = run_cli(
        "vlr.eval",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for key in ("test/rsum", "test/image/overlap@10", "test/text/overlap@10", "test/t2t/rouge_l_NDCG@10"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
