import pytest
import torch

from vlr.data.corpus import CaptionSplit
from vlr.imbalance import Imbalance


def _split(name="train", images=20, per_image=5):
    caps = [f"a red circle number {c}" for c in range(images * per_image)]
    return CaptionSplit(
        name,
        [f"{i}.png" for i in range(images)],
        caps,
        torch.arange(images).repeat_interleave(per_image),
        tokens=[c.split() for c in caps],
    )


def test_strength_zero_and_eval_splits_are_untouched():
    split = _split()
    assert Imbalance("text_weak", 0.0, text={"attribute_omission": 1.0}).apply_split(split, []) is split
    weak = Imbalance("text_weak", 1.0, text={"attribute_omission": 1.0})
    assert weak.apply_split(_split("test"), []).captions[0] == "a red circle number 0"
    out = weak.apply_split(split, [])
    assert out.captions[0] == "a circle number 0" and out.tokens[0] == ["a", "circle", "number", "0"]
    assert split.captions[0] == "a red circle number 0"  # the original is not modified
    evaluated = Imbalance("text_weak", 1.0, apply_to_eval=True, text={"attribute_omission": 1.0})
    assert evaluated.apply_split(_split("test"), []).captions[0] == "a circle number 0"


def test_scale_times_strength_is_the_op_level():
    im = Imbalance("x", 0.5, text={"word_dropout": 0.3}, pair_noise=4.0)
    assert im.level(0.3) == pytest.approx(0.15) and im.level(4.0) == 1.0


def test_pair_noise_repairs_the_stated_fraction_never_with_its_own_image():
    split = _split(images=50, per_image=4)
    out = Imbalance("pair_noise", 0.3, pair_noise=1.0).apply_split(split, [])
    moved = out.text_to_image != split.text_to_image
    assert 0.24 < moved.float().mean().item() < 0.36
    assert out.captions == split.captions and out.text_to_image.max() < 50


def test_fewer_captions_keeps_a_subset_without_renumbering():
    split = _split(images=6, per_image=5)
    out = Imbalance("fewer", 0.5, fewer_captions=1.0).apply_split(split, [])
    assert out.num_captions == 30  # indices still address the annotation (and reference rows)
    kept = out.active_captions
    assert kept.tolist() == [c for i in range(6) for c in range(5 * i, 5 * i + 3)]  # ceil(0.5 * 5) = 3 each
    with pytest.raises(ValueError, match="fewer_captions applies to training only"):
        Imbalance("fewer", 0.5, fewer_captions=1.0, apply_to_eval=True)


def test_tower_asymmetry_edits_the_model_config():
    cfg = {"text_tower": {"config": {"num_hidden_layers": 4}}, "image_tower": {"model_kwargs": {"depth": 3}}}
    Imbalance("small", 0.5, tower={"side": "text", "mode": "shrink"}).apply_to_model_config(cfg)
    Imbalance("small", 1.0, tower={"side": "image", "mode": "shrink"}).apply_to_model_config(cfg)
    assert cfg["text_tower"]["config"]["num_hidden_layers"] == 2 and cfg["image_tower"]["model_kwargs"]["depth"] == 1
    Imbalance("frozen", 0.1, tower={"side": "image", "mode": "freeze"}).apply_to_model_config(cfg)
    assert cfg["image_tower"]["freeze"] is True
    named = {"text_tower": {"name_or_path": "bert-base-uncased"}, "image_tower": {}}
    with pytest.raises(
        ValueError, match=r"shrinks the text tower, which needs model.text_tower.config.num_hidden_layers"
    ):
        Imbalance("small", 0.5, tower={"side": "text", "mode": "shrink"}).apply_to_model_config(named)


def test_bad_settings_name_the_option():
    with pytest.raises(ValueError, match=r"imbalance.strength must be in \[0, 1\], got 1.5"):
        Imbalance("x", 1.5)
    with pytest.raises(KeyError, match="unknown image imbalance op 'sepia'"):
        Imbalance("x", 0.5, image={"sepia": 1.0})
    with pytest.raises(ValueError, match="imbalance.tower needs side in"):
        Imbalance("x", 0.5, tower={"side": "audio", "mode": "freeze"})
