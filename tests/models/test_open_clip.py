"""model=open_clip: a tiny open_clip architecture from a local config, its weights saved and
loaded back through the preset (nothing downloaded)."""

import open_clip
import pytest
import torch

from tests.conftest import small_run, tower_preset
from tests.test_config import _compose
from vlr.build import build_data_and_model
from vlr.errors import ConfigError
from vlr.towers import OpenCLIPImageTower, OpenCLIPTextTower
from vlr.towers.tokenizer import OpenCLIPTokenizer


def _build(tmp_path, monkeypatch, root, tiny_open_clip, *overrides):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    cfg = _compose(small_run(root, *tower_preset("open_clip", None, None, tiny_open_clip), *overrides))
    torch.manual_seed(0)
    return build_data_and_model(cfg)


def test_the_preset_loads_the_saved_weights_preprocessing_and_tokenizer(
    tmp_path, monkeypatch, synthetic_root, tiny_open_clip
):
    datamodule, module = _build(tmp_path, monkeypatch, synthetic_root, tiny_open_clip)
    original = tiny_open_clip["model"]
    assert module.encoder.embed_dim == 16  # embed_dim: null keeps the model's joint space
    assert "logit_scale" not in dict(module.named_parameters())
    captions = ["a red square next to a blue circle!", "two cats"]
    batch = datamodule.tokenizer(captions, padding=True, truncation=True, max_length=77, return_tensors="pt")
    expected_ids = open_clip.get_tokenizer(tiny_open_clip["arch"].stem)(captions)
    assert torch.equal(batch["input_ids"], expected_ids) and batch["input_ids"].shape == (2, 16)
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    module.eval()
    with torch.no_grad():
        assert torch.equal(module.encoder.image_tower(images), original.encode_image(images))
        assert torch.equal(
            module.encoder.text_tower(batch["input_ids"], batch["attention_mask"]), original.encode_text(expected_ids)
        )
        ours = (
            module.encoder.embed_images(images)
            @ module.encoder.embed_texts(
                **{"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            ).T
        )
        theirs = original.encode_image(images, normalize=True) @ original.encode_text(expected_ids, normalize=True).T
    assert torch.allclose(ours, theirs, atol=1e-6)
    # data.image_transform=tower: the model's own size, mean/std and interpolation
    config = module.encoder.image_tower.data_config()
    assert config["input_size"] == (3, 32, 32) and config["mean"] == tuple(original.visual.preprocess_cfg["mean"])
    datamodule.setup("fit")
    assert next(iter(datamodule.train_dataloader()))["images"].shape[-2:] == (32, 32)


def test_random_weights_without_pretrained_and_no_download(tiny_open_clip, caplog):
    a = OpenCLIPImageTower(str(tiny_open_clip["arch"]))
    assert not torch.equal(a.visual.conv1.weight, tiny_open_clip["model"].visual.conv1.weight)
    assert "No pretrained weights" not in caplog.text  # asked for: not a warning


def test_partial_locking_and_gradient_checkpointing(tmp_path, monkeypatch, synthetic_root, tiny_open_clip):
    def trainable(module, prefix=""):
        return {prefix + n for n, p in module.named_parameters() if p.requires_grad}

    # open_clip's own --lock-image-unlocked-groups / --lock-text-unlocked-layers, on its whole model
    for n in (0, 1, 2, 9):
        reference = open_clip.create_model(tiny_open_clip["arch"].stem)
        reference.lock_image_tower(unlocked_groups=n)
        reference.lock_text_tower(unlocked_layers=n)
        image = OpenCLIPImageTower(str(tiny_open_clip["arch"]), unlocked_layers=n)
        text = OpenCLIPTextTower(str(tiny_open_clip["arch"]), unlocked_layers=n)
        expected = {k for k in trainable(reference) if k not in ("logit_scale", "logit_bias")}
        assert trainable(image.visual, "visual.") | trainable(text.model) == expected, n
    assert trainable(OpenCLIPImageTower(str(tiny_open_clip["arch"]), unlocked_layers=1)) == {"visual.proj"}
    assert len(trainable(OpenCLIPTextTower(str(tiny_open_clip["arch"]), unlocked_layers=None))) > 10
    with pytest.raises(ConfigError, match="model.text_tower.unlocked_layers must be a non-negative integer"):
        OpenCLIPTextTower(str(tiny_open_clip["arch"]), unlocked_layers=-1)

    def grads(*overrides):
        datamodule, module = _build(
            tmp_path,
            monkeypatch,
            synthetic_root,
            tiny_open_clip,
            "data.augment=false",
            "data.shuffle=false",
            *overrides,
        )
        datamodule.setup("fit")
        batch = next(iter(datamodule.train_dataloader()))
        terms = module.objective.batch_terms(module.encoder, batch, module.reference)
        torch.stack(list(terms.values())).sum().backward()
        return module, {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}

    _, plain = grads()
    module, ckpt = grads("model.grad_checkpointing=true")
    assert module.encoder.image_tower.visual.transformer.grad_checkpointing
    assert module.encoder.text_tower.model.transformer.grad_checkpointing
    assert plain.keys() == ckpt.keys() and len(plain) > 10
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=1e-4, atol=1e-6), name


def test_bad_arch_and_pretrained_are_named(tmp_path, tiny_open_clip):
    with pytest.raises(ConfigError, match="model.arch=ViT-Nope is not an open_clip model"):
        OpenCLIPImageTower("ViT-Nope")
    with pytest.raises(ConfigError, match=r"model.arch=/no/such.json: no such model-config file"):
        OpenCLIPTokenizer("/no/such.json")
    with pytest.raises(ConfigError, match=r"model.pretrained=/no/ckpt.pt: no such checkpoint file"):
        OpenCLIPTextTower(str(tiny_open_clip["arch"]), pretrained="/no/ckpt.pt")
    with pytest.raises(ConfigError, match="model.pretrained=laion9000 is not a tag of ViT-B-32 .*openai"):
        OpenCLIPImageTower("ViT-B-32", pretrained="laion9000")


def test_a_config_file_builds_what_it_says_whatever_its_name(tmp_path, tiny_open_clip):
    """A file named like a built-in model, and two files of one name, each build their own config."""
    import json

    config = json.loads(tiny_open_clip["arch"].read_text())
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    named_like_builtin = tmp_path / "a" / "ViT-B-32.json"
    named_like_builtin.write_text(json.dumps(config))
    assert OpenCLIPImageTower(str(named_like_builtin)).out_dim == 16  # not ViT-B-32's 512
    config["embed_dim"] = 8
    same_name = tmp_path / "b" / "ViT-B-32.json"
    same_name.write_text(json.dumps(config))
    assert OpenCLIPImageTower(str(same_name)).out_dim == 8
    assert OpenCLIPTextTower(str(same_name)).out_dim == 8


def test_openai_weights_get_quickgelu_and_tokens_fit_the_context():
    from vlr.towers.open_clip_towers import _quick_gelu_needed

    # OpenAI's weights were trained with QuickGELU: the plain name would load them into GELU blocks
    assert _quick_gelu_needed("ViT-B-32", "openai")
    assert not _quick_gelu_needed("ViT-B-32-quickgelu", "openai")
    assert not _quick_gelu_needed("ViT-B-16", "laion2b_s34b_b88k")
    assert OpenCLIPTokenizer("ViT-B-32", max_length=77)(["a dog"])["input_ids"].shape == (1, 77)
    with pytest.raises(ConfigError, match="model.tokenizer.max_length=32, but ViT-B-32 reads 77 tokens"):
        OpenCLIPTokenizer("ViT-B-32", max_length=32)


def test_settings_that_cannot_work_end_in_one_line(tmp_path, monkeypatch, synthetic_root, tiny_open_clip):
    monkeypatch.setenv("VLR_ROOT", str(tmp_path))
    towers = [f"model.arch={tiny_open_clip['arch']}", "model=open_clip"]
    cfg = _compose(small_run(synthetic_root, *towers))  # the synthetic data's builtin 64-px transform
    with pytest.raises(
        ConfigError, match="data.image_size=64, but the image tower takes 32x32 images: set data.image_transform=tower"
    ):
        build_data_and_model(cfg)
    with pytest.raises(
        ConfigError, match=r"model.pretrained=openai is not a tag of vlr-tiny-open-clip-\w+ \(it has none"
    ):
        OpenCLIPImageTower(str(tiny_open_clip["arch"]), pretrained="openai")
    cfg = _compose(
        small_run(synthetic_root, *tower_preset("open_clip", None, None, tiny_open_clip), "model.compile=maybe")
    )
    with pytest.raises(Exception, match="model.compile must be true or false, got 'maybe'"):
        build_data_and_model(cfg)
