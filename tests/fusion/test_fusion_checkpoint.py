"""Released checkpoints' fusion layers and ITM head (`vlr.models.fusion_checkpoint`): a tiny
random state dict in each release's key layout, saved locally, lands in the fusion encoder
tensor for tensor; a checkpoint that does not fit is one line naming the file."""

import pytest
import torch

from tests.conftest import compose_config, small_run
from vlr.build import build_data_and_model
from vlr.errors import ConfigError
from vlr.models.fusion import FusionEncoder
from vlr.models.fusion_checkpoint import load_fusion_checkpoint

WIDTH, IMG_WIDTH, LAYERS = 16, 8, 2


def _release_state_dict(layer_prefix: str, first: int, head: str, extra_layers: int = 0) -> dict:
    """What a release holds: text-only layers below the fusion layers, the fusion layers, the ITM
    head, and unrelated tensors (a vision tower, a queue), all random; built from a vlr encoder's
    names so every fusion tensor is there."""
    g = torch.Generator().manual_seed(1)
    reference = FusionEncoder(WIDTH, IMG_WIDTH, layers=LAYERS + extra_layers, heads=4, itm_head=head)
    sd = {"visual_encoder.blocks.0.attn.qkv.weight": torch.randn(3, 3, generator=g), "image_queue": torch.randn(4)}
    for i in range(first):
        sd[f"{layer_prefix}{i}.attention.self.query.weight"] = torch.randn(WIDTH, WIDTH, generator=g)
    for key, value in reference.state_dict().items():
        if key.startswith("layer."):
            i, rest = key.split(".", 2)[1:]
            sd[f"{layer_prefix}{first + int(i)}.{rest}"] = torch.randn(value.shape, generator=g)
        else:
            sd[key] = torch.randn(value.shape, generator=g)
    return sd


@pytest.mark.parametrize(
    "layout, prefix, first, head",
    [
        ("albef", "text_encoder.encoder.layer.", 6, "linear"),
        ("albef_pretrain", "text_encoder.bert.encoder.layer.", 6, "linear"),
        ("xvlm", "text_encoder.encoder.layer.", 6, "mlp"),
        ("blip", "text_encoder.encoder.layer.", 0, "linear"),
    ],
)
def test_each_release_layout_lands_tensor_for_tensor(tmp_path, layout, prefix, first, head):
    sd = _release_state_dict(prefix, first, head)
    path = tmp_path / "release.pth"
    torch.save({"model": sd, "epoch": 3}, path)  # ALBEF / X-VLM / BLIP save under "model"
    fusion = FusionEncoder(WIDTH, IMG_WIDTH, layers=LAYERS, heads=4, itm_head=head)
    load_fusion_checkpoint(fusion, path, layout)
    own = fusion.state_dict()
    assert torch.equal(
        own["layer.1.crossattention.self.key.weight"], sd[f"{prefix}{first + 1}.crossattention.self.key.weight"]
    )
    assert torch.equal(own["layer.0.output.LayerNorm.bias"], sd[f"{prefix}{first}.output.LayerNorm.bias"])
    head_key = "itm_head.weight" if head == "linear" else "itm_head.3.weight"
    assert torch.equal(own[head_key], sd[head_key])
    for key, value in own.items():  # every tensor came from the file
        name = key if key.startswith("itm_head") else f"{prefix}{first + int(key.split('.')[1])}.{key.split('.', 2)[2]}"
        assert torch.equal(value, sd[name]), key


def test_the_config_option_loads_it_into_the_run_model(tmp_path, synthetic_root):
    """model.fusion.checkpoint with the tiny preset: token widths 96 (text) and 96 (image)."""
    cfg = compose_config(*small_run(synthetic_root, "fusion=default"), run_dir=tmp_path / "a", root=tmp_path)
    _, model = build_data_and_model(cfg)
    g = torch.Generator().manual_seed(2)
    own = model.fusion.state_dict()
    sd = {
        f"text_encoder.encoder.layer.{6 + int(k.split('.')[1])}.{k.split('.', 2)[2]}": torch.randn(v.shape, generator=g)
        for k, v in own.items()
        if k.startswith("layer.")
    }
    sd |= {
        k: torch.randn(v.shape, generator=g) for k, v in model.fusion.state_dict().items() if k.startswith("itm_head")
    }
    torch.save(sd, tmp_path / "albef.pth")
    cfg = compose_config(
        *small_run(synthetic_root, "fusion=default", f"model.fusion.checkpoint={tmp_path / 'albef.pth'}"),
        run_dir=tmp_path / "b", root=tmp_path,
    )  # fmt: skip
    _, loaded = build_data_and_model(cfg)
    assert torch.equal(
        loaded.fusion.layer[1].crossattention.self.value.weight,
        sd["text_encoder.encoder.layer.7.crossattention.self.value.weight"],
    )
    assert torch.equal(loaded.fusion.itm_head.bias, sd["itm_head.bias"])


def _expect_one_line(path, layout, match, layers=LAYERS, head="linear"):
    fusion = FusionEncoder(WIDTH, IMG_WIDTH, layers=layers, heads=4, itm_head=head)
    with pytest.raises(ConfigError) as err:
        load_fusion_checkpoint(fusion, path, layout)
    message = str(err.value)
    assert "\n" not in message and f"model.fusion.checkpoint={path}" in message
    assert match in message, message


def test_what_does_not_fit_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "x.pth"
    sd = _release_state_dict("text_encoder.encoder.layer.", 6, "linear")
    torch.save({k: v for k, v in sd.items() if "crossattention.output.dense" not in k}, path)
    _expect_one_line(path, "albef", "4 fusion weights missing (e.g. layer.0.crossattention.output.dense.bias")
    torch.save({**sd, "text_encoder.encoder.layer.6.crossattention.self.extra": torch.zeros(1)}, path)
    _expect_one_line(path, "albef", "1 unknown keys (e.g. layer.0.crossattention.self.extra)")
    torch.save(_release_state_dict("text_encoder.encoder.layer.", 6, "linear", extra_layers=1), path)
    _expect_one_line(
        path, "albef", "keys of fusion layers beyond model.fusion.layers=2 (e.g. text_encoder.encoder.layer.8."
    )
    torch.save(sd, path)
    _expect_one_line(path, "xvlm", "fusion weights missing (e.g. itm_head.0.bias", head="mlp")
    _expect_one_line(tmp_path / "absent.pth", "albef", "no such file")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    _expect_one_line(tmp_path / "junk.pth", "albef", "not a readable torch checkpoint")
    wide = FusionEncoder(2 * WIDTH, IMG_WIDTH, layers=LAYERS, heads=4)
    with pytest.raises(
        ConfigError, match=r"shapes differ \(e\.g\. layer\.0\.attention\.self\.query\.weight \(16, 16\) vs \(32, 32\)"
    ):
        load_fusion_checkpoint(wide, path, "albef")
