"""vlr/reference/controls.py: the shuffled (negative control) and noisy-oracle references."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

import vlr
from vlr.errors import ConfigError
from vlr.reference import FeatureReference, save_features
from vlr.reference.controls import NoisyReference, ShuffledReference

CONF = str(Path(vlr.__file__).parent / "conf")


@pytest.fixture
def oracle(tmp_path):
    gen = torch.Generator().manual_seed(0)
    save_features(tmp_path, "train", torch.randn(12, 5, generator=gen), torch.randn(30, 7, generator=gen), {})
    split = SimpleNamespace(num_images=12, num_captions=30)
    ref = FeatureReference(str(tmp_path))
    ref.prepare("train", split)
    return ref, split


def _batch(images, captions):
    return {"image_idx": torch.tensor(images), "caption_idx": torch.tensor(captions)}


def test_shuffled_keeps_the_batch_rows_but_breaks_which_item_has_which(oracle):
    base, split = oracle
    shuffled = ShuffledReference(base, seed=3)
    shuffled.prepare("train", split)
    batch = _batch(list(range(12)), list(range(0, 30, 2)))
    for kind in ("image", "text"):
        own, got = base.embed(kind, "train", batch), shuffled.embed(kind, "train", batch)
        # the same multiset of rows (a permutation of them) ...
        order = shuffled.permutation(kind, "train", batch["image_idx" if kind == "image" else "caption_idx"])
        assert sorted(order.tolist()) == list(range(len(own)))
        assert torch.equal(got, own[order])
        assert torch.equal(torch.sort(got.sum(1)).values, torch.sort(own.sum(1)).values)
        # ... on the wrong items: most rows moved, and the relation matrix is no longer the base's
        moved = (got != own).any(dim=1).float().mean().item()
        assert moved > 0.6
        assert not torch.allclose(got @ got.T, own @ own.T)
        # a function of the batch, not of call order: asked again (a warm cache, a rerun), the same rows
        assert torch.equal(shuffled.embed(kind, "train", batch), got)
    other = ShuffledReference(base, seed=4)
    other.prepare("train", split)
    assert not torch.equal(other.embed("image", "train", batch), shuffled.embed("image", "train", batch))


def test_noisy_level_zero_is_the_base_and_noise_is_fixed_per_item(oracle):
    base, split = oracle
    batch = _batch([3, 0, 7], [29, 4])
    exact = NoisyReference(base, level=0.0)
    exact.prepare("train", split)
    for kind in ("image", "text"):
        assert torch.equal(exact.embed(kind, "train", batch), base.embed(kind, "train", batch))
    noisy = NoisyReference(base, level=0.5, seed=1)
    noisy.prepare("train", split)
    rows = noisy.embed("image", "train", batch)
    noise = noisy.noise_rows("image", "train", 12)[[3, 0, 7]]
    expected = F.normalize(0.5 * base.embed("image", "train", batch) + 0.5 * noise, dim=-1)
    assert torch.allclose(rows, expected) and torch.allclose(rows.norm(dim=1), torch.ones(3))
    # an item's noise does not depend on its batch
    alone = noisy.embed("image", "train", _batch([7], [0]))
    assert torch.allclose(alone[0], rows[2])
    # more noise, further from the oracle: cosine to the base row falls with the level
    cos = []
    for level in (0.0, 0.3, 0.7, 1.0):
        ref = NoisyReference(base, level=level, seed=1)
        ref.prepare("train", split)
        full = _batch(list(range(12)), list(range(30)))
        cos.append(float((ref.embed("text", "train", full) * base.embed("text", "train", full)).sum(1).mean()))
    assert cos[0] == pytest.approx(1.0) and cos[0] > cos[1] > cos[2] > cos[3]
    with pytest.raises(ConfigError, match=r"reference.level must be in \[0, 1\], got 1.5"):
        NoisyReference(base, level=1.5)


def test_controls_refuse_a_base_that_is_not_a_built_reference():
    with pytest.raises(ConfigError, match="reference=shuffled wraps a built reference"):
        ShuffledReference(lambda encoder: None)


def test_the_configs_build_the_wrappers_over_their_bases(tmp_path, oracle):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["reference=noisy_oracle", "reference.level=0.25", f"reference.base.path={oracle[0].directory}"],
        )
        shuffled = compose("train", overrides=["reference=shuffled", "reference@reference.base=oracle"])
    built = instantiate(cfg.reference)
    assert isinstance(built, NoisyReference) and isinstance(built.base, FeatureReference) and built.level == 0.25
    assert shuffled.reference._target_ == "vlr.reference.controls.ShuffledReference"
    assert shuffled.reference.base._target_ == "vlr.reference.FeatureReference"
