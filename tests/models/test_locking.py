"""Partial locking (open_clip's unlocked groups / layers): only the last N layer groups train."""

import pytest
import torch

from tests.conftest import quiet_trainer, small_run, tiny_bert
from vlr.errors import ConfigError
from vlr.towers import CLIPImageTower, CLIPTextTower, ImageTower, TextTower

VIT = dict(img_size=16, patch_size=8, embed_dim=16, depth=3, num_heads=2)
BERT = tiny_bert(layers=3)


def test_image_tower_keeps_the_last_groups_trainable():
    full = ImageTower("vit_tiny_patch16_224", model_kwargs=VIT)
    assert all(p.requires_grad for p in full.parameters())

    def trainable(tower):
        names = {n for n, p in tower.backbone.named_parameters() if p.requires_grad}
        return {".".join(n.split(".")[:2]) if n.startswith("blocks.") else n.split(".")[0] for n in names}

    # timm's coarse groups (as open_clip locks timm towers): stem, block 0, block 1, block 2 + final norm
    assert trainable(ImageTower("vit_tiny_patch16_224", model_kwargs=VIT, unlocked_layers=1)) == {"blocks.2", "norm"}
    two = ImageTower("vit_tiny_patch16_224", model_kwargs=VIT, unlocked_layers=2)
    assert trainable(two) == {"blocks.1", "blocks.2", "norm"}
    assert trainable(ImageTower("vit_tiny_patch16_224", model_kwargs=VIT, unlocked_layers=4)) == trainable(full)
    none = ImageTower("vit_tiny_patch16_224", model_kwargs=VIT, unlocked_layers=0)
    assert not any(p.requires_grad for p in none.parameters())


def test_text_tower_locks_embeddings_then_layers():
    tower = TextTower(config=BERT, vocab_size=30, unlocked_layers=1)
    trainable = {n for n, p in tower.encoder.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.2.") for n in trainable)
    assert all(p.requires_grad for p in tower.encoder.encoder.layer[2].parameters())
    tower = TextTower(config=BERT, vocab_size=30, unlocked_layers=3)
    assert not any(p.requires_grad for p in tower.encoder.embeddings.parameters())
    assert all(p.requires_grad for p in tower.encoder.encoder.layer.parameters())


def test_clip_towers_count_the_head_as_the_last_group(tiny_clip):
    image = CLIPImageTower(tiny_clip["dir"], unlocked_layers=1)
    trainable = {n for n, p in image.model.named_parameters() if p.requires_grad}
    assert trainable == {
        n
        for n, _ in image.model.named_parameters()
        if n.startswith(("vision_model.post_layernorm", "visual_projection"))
    }
    text = CLIPTextTower(tiny_clip["dir"], unlocked_layers=2)
    last_layer = len(text.model.text_model.encoder.layers) - 1
    trainable = {n for n, p in text.model.named_parameters() if p.requires_grad}
    assert any(f"encoder.layers.{last_layer}." in n for n in trainable)
    assert any(n.startswith("text_projection") for n in trainable)
    assert not any(f"encoder.layers.{last_layer - 1}." in n or "embeddings" in n for n in trainable)


def test_a_locked_group_does_not_move_in_training(tmp_path, monkeypatch, synthetic_root):
    from tests.test_config import _compose
    from vlr.build import build_data_and_model

    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    unlocked = ["+model.image_tower.unlocked_layers=2", "+model.text_tower.unlocked_layers=1"]
    datamodule, module = build_data_and_model(_compose(small_run(synthetic_root, *unlocked)))
    before = {n: p.detach().clone() for n, p in module.encoder.named_parameters()}
    quiet_trainer().fit(module, datamodule=datamodule)
    moved = {n for n, p in module.encoder.named_parameters() if not torch.equal(p, before[n])}
    assert "image_tower.backbone.blocks.1.attn.qkv.weight" in moved and "image_tower.backbone.norm.weight" in moved
    assert not any(
        n.startswith(
            (
                "image_tower.backbone.blocks.0.",
                "image_tower.backbone.patch_embed",
                "text_tower.encoder.embeddings",
                "text_tower.encoder.encoder.layer.0.",
            )
        )
        for n in moved
    )
    assert any(n.startswith("text_tower.encoder.encoder.layer.1.") for n in moved)  # tiny's text tower: 2 layers


def test_bad_unlocked_layers_are_named():
    with pytest.raises(ConfigError, match=r"model.image_tower.unlocked_layers must be an integer from 0 to 4 .*got 9"):
        ImageTower("vit_tiny_patch16_224", model_kwargs=VIT, unlocked_layers=9)
    with pytest.raises(ConfigError, match=r"model.text_tower.unlocked_layers must be an integer from 0 to 4 .*got -1"):
        TextTower(config=BERT, vocab_size=30, unlocked_layers=-1)
