"""`vlr.write_features` (in-process, `run_vlr`) with locally saved tiny encoders, then training on its
files. (`tests/test_packaging.py` runs it in a fresh interpreter, imported alone.)"""

import pytest
import torch

from tests.conftest import SYNTHETIC_ROOT_SPEC, run_vlr

pytestmark = pytest.mark.slow


def _encoder_overrides(tiny_pretrained):
    kw = tiny_pretrained["timm_kwargs"]
    return [
        "image_encoder.name=vit_tiny_patch16_224",
        "image_encoder.pretrained=false",
        f"image_encoder.checkpoint_path={tiny_pretrained['timm']}",
        *(f"+image_encoder.model_kwargs.{k}={v}" for k, v in kw.items()),
        f"text_encoder.name_or_path={tiny_pretrained['bert']}",
    ]


def test_written_features_equal_the_encoders_outputs_and_train_a_run(tmp_path, synthetic_root, tiny_pretrained):
    from transformers import AutoTokenizer

    from vlr.data.images import load_rgb
    from vlr.data.karpathy import read_karpathy
    from vlr.data.transforms import tower_transform
    from vlr.reference import load_features
    from vlr.towers import ImageTower, TextTower

    out = tmp_path / "feats"
    proc = run_vlr(
        "write_features",
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.num_workers=0",
        f"out_dir={out}",
        *_encoder_overrides(tiny_pretrained),
        dir=tmp_path / "write",
    )
    assert proc.returncode == 0, proc.output[-3000:]
    assert f"reference.path={out}" in proc.output

    split = read_karpathy(synthetic_root / "dataset_synthetic.json", synthetic_root, "test")
    feats = load_features(out, "test", split.num_images, split.num_captions)
    tower = ImageTower(
        "vit_tiny_patch16_224",
        checkpoint_path=str(tiny_pretrained["timm"]),
        model_kwargs=tiny_pretrained["timm_kwargs"],
    ).eval()
    transform = tower_transform(tower.data_config(), train=False)
    with torch.no_grad():
        want = tower(torch.stack([transform(load_rgb(p)) for p in split.image_paths[:4]]))
        assert torch.allclose(feats["image"][:4], want, atol=1e-5)
        text = TextTower(str(tiny_pretrained["bert"]), pooling="mean").eval()
        enc = AutoTokenizer.from_pretrained(str(tiny_pretrained["bert"]))(
            split.captions[:3], padding=True, return_tensors="pt"
        )
        assert torch.allclose(feats["text"][:3], text(enc["input_ids"], enc["attention_mask"]), atol=1e-5)
    assert sorted(p.name for p in out.glob("*.safetensors")) == [
        "test.safetensors",
        "train.safetensors",
        "val.safetensors",
    ]

    # the files drive a SAD run, distillation and overlap@k alike
    run = [
        "objective=sad",
        "reference=features",
        f"reference.path={out}",
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.num_workers=0",
        "data.batch_size=20",
        "trainer.max_epochs=1",
        "logger=csv",
    ]
    proc = run_vlr("train", *run, dir=tmp_path / "run")
    assert proc.returncode == 0, proc.output[-3000:]
    log = (tmp_path / "run" / "csv" / "metrics.csv").read_text()
    assert "train/loss/kd" in log and "test/image/overlap@10" in log
