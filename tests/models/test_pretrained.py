"""Pretrained towers through the model presets: tiny random CLIP, BERT and timm models saved
locally (as a user's downloads would be) load through the configs and reproduce the originals."""

import pytest
import torch

from tests.conftest import SYNTHETIC_ROOT_SPEC
from tests.test_config import _compose
from vlr.build import build_data_and_model


def _build(tmp_path, monkeypatch, synthetic_root, overrides):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    cfg = _compose([f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, *overrides])
    return build_data_and_model(cfg)


def test_clip_preset_loads_a_local_clip_checkpoint(tmp_path, monkeypatch, synthetic_root, tiny_clip):
    datamodule, module = _build(
        tmp_path,
        monkeypatch,
        synthetic_root,
        [
            "model=clip_vit_b32",
            f"model.image_tower.name_or_path={tiny_clip['dir']}",
            "data.image_transform=tower",
        ],
    )
    clip, tok = tiny_clip["model"], tiny_clip["tokenizer"]
    module.eval()
    images = torch.randn(3, 3, 32, 32)
    enc = tok(["a red circle", "a blue square on the left"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want_i = clip.get_image_features(pixel_values=images)
        want_t = clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        want_i = getattr(want_i, "pooler_output", want_i)
        want_t = getattr(want_t, "pooler_output", want_t)
        assert torch.allclose(module.encoder.image_tower(images), want_i, atol=1e-5)
        assert torch.allclose(module.encoder.text_tower(enc["input_ids"], enc["attention_mask"]), want_t, atol=1e-5)
        # embed_dim: null keeps CLIP's joint space: the embeddings are CLIP's, normalised
        assert torch.allclose(module.embed_images(images), torch.nn.functional.normalize(want_i, dim=-1), atol=1e-5)
    assert datamodule.tokenizer.vocab == tok.vocab and datamodule.max_length == 77
    # the image transform is CLIP's: 32 px (the checkpoint's size), OpenAI mean/std
    x = datamodule._transform(False)(__import__("PIL.Image", fromlist=["Image"]).new("RGB", (50, 40), (255, 255, 255)))
    assert x.shape == (3, 32, 32)
    assert torch.allclose(
        x[:, 0, 0],
        (1 - torch.tensor([0.48145466, 0.4578275, 0.40821073])) / torch.tensor([0.26862954, 0.26130258, 0.27577711]),
        atol=1e-4,
    )


def test_vit_bert_preset_loads_local_timm_weights_and_bert_directory(
    tmp_path, monkeypatch, synthetic_root, tiny_pretrained
):
    kw = tiny_pretrained["timm_kwargs"]
    _, module = _build(
        tmp_path,
        monkeypatch,
        synthetic_root,
        [
            "model=vit_bert",
            "model.image_tower.name=vit_tiny_patch16_224",
            "model.image_tower.pretrained=false",
            f"model.image_tower.checkpoint_path={tiny_pretrained['timm']}",
            *(f"+model.image_tower.model_kwargs.{k}={v}" for k, v in kw.items()),
            f"model.text_tower.name_or_path={tiny_pretrained['bert']}",
            "data.image_size=32",  # the tiny ViT takes 32x32 images (refused otherwise, before any step)
        ],
    )
    module.eval()
    vit, bert = tiny_pretrained["originals"]["timm"], tiny_pretrained["originals"]["bert"]
    images, ids = torch.randn(2, 3, 32, 32), torch.randint(5, 60, (2, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.allclose(module.encoder.image_tower(images), vit(images), atol=1e-6)
        assert torch.allclose(
            module.encoder.text_tower(ids, mask),
            bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0],
            atol=1e-6,
        )
    assert module.encoder.image_tower.data_config()["input_size"] == (3, 32, 32)


def test_missing_local_weights_are_named(tmp_path, monkeypatch, synthetic_root):
    with pytest.raises(Exception, match="nope"):
        _build(
            tmp_path,
            monkeypatch,
            synthetic_root,
            ["model=clip_vit_b32", f"model.image_tower.name_or_path={tmp_path / 'nope'}"],
        )
