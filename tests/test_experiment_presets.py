"""The real-data presets compose and start: a few steps with a tiny stand-in CLIP on generated data."""

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    "preset, objective",
    [("flickr30k_clip", "infonce"), ("coco_clip", "infonce"), ("flickr30k_clip", "sad"), ("flickr30k_clip", "covlr")],
)
def test_real_data_preset_starts_with_tiny_towers(tmp_path, synthetic_root, tiny_clip, preset, objective):
    """Every structure objective too: SAD's heads take CLIP's joint-space size (embed_dim: null)."""
    run_dir = tmp_path / "run"
    proc = run_cli(
        "vlr.train",
        f"experiment={preset}",
        f"data.root={synthetic_root}",
        "data.annotation=dataset_synthetic.json",
        "data.image_dir=",
        f"model.image_tower.name_or_path={tiny_clip['dir']}",
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
    metrics = json.loads((run_dir / "metrics.json").read_text())
    tiers = ["5k/", "1k/"] if preset == "coco_clip" else [""]  # COCO: both test tiers from one pass
    for tier in tiers:
        assert f"test/{tier}rsum" in metrics and f"test/{tier}t2t/NDCG@10" in metrics
    config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "CLIPImageTower" in config and "image_transform: tower" in config and "FrozenInitReference" in config
