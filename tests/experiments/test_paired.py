"""experiments/paired.py: paired bootstrap over test images from per-query rankings."""

import numpy as np
import pytest
from safetensors.numpy import save_file

from experiments.paired import paired_difference, paired_table, seeds_and_queries_difference


def _rankings(rng, n_img=300, caps=3, p_i2t=0.5, p_t2i=0.4):
    t2i = np.repeat(np.arange(n_img), caps)
    r = {"text_to_image": t2i}
    for k in (1, 5, 10):
        r[f"i2t/R@{k}"] = (rng.random(n_img) < min(1, p_i2t * k**0.3)).astype(np.float64)
        r[f"t2i/R@{k}"] = (rng.random(n_img * caps) < min(1, p_t2i * k**0.3)).astype(np.float64)
    return r


def test_point_estimate_and_interval_of_a_paired_difference():
    rng = np.random.default_rng(0)
    a, b = _rankings(rng), _rankings(rng, p_i2t=0.4)
    d = paired_difference(a, b, "i2t/R@1", n=4000)
    assert d["difference"] == pytest.approx(100 * (a["i2t/R@1"].mean() - b["i2t/R@1"].mean()))
    # the bootstrap spread of a mean of paired per-image differences: sd(diff) / sqrt(n) (x100, x1.96)
    diff = a["i2t/R@1"] - b["i2t/R@1"]
    half = 1.96 * 100 * diff.std() / np.sqrt(diff.size)
    assert (d["high"] - d["low"]) / 2 == pytest.approx(half, rel=0.12)
    assert d["low"] < d["difference"] < d["high"]
    rsum = paired_difference(a, b, "rsum", n=500)
    direct = sum(100 * (a[k].mean() - b[k].mean()) for k in a if k != "text_to_image")
    assert rsum["difference"] == pytest.approx(direct)


def test_identical_runs_have_a_zero_interval_and_other_test_sets_are_refused(tmp_path):
    rng = np.random.default_rng(1)
    a = _rankings(rng)
    d = paired_difference(a, {k: v.copy() for k, v in a.items()}, "rsum", n=300)
    assert d == {"difference": 0.0, "low": 0.0, "high": 0.0, "n_boot": 300, "level": 0.95}
    other = _rankings(rng, n_img=200)
    with pytest.raises(SystemExit, match="not evaluated on the same test set"):
        paired_difference(a, other, "rsum")
    for name, r in (("a", a), ("b", _rankings(rng, p_i2t=0.9, p_t2i=0.9))):
        (tmp_path / name).mkdir()
        save_file(r, str(tmp_path / name / "rankings.safetensors"))
    text = paired_table(tmp_path / "b", tmp_path / "a", metrics=["rsum", "i2t/R@1"], n=300)
    assert "| rsum |" in text and "| yes |" in text


def test_the_seed_stage_of_the_two_stage_bootstrap_widens_the_interval_to_the_spread_of_seeds():
    rng = np.random.default_rng(1)
    base = _rankings(rng)
    shifted_up = {**base, "i2t/R@1": base["i2t/R@1"] + 0.1}  # +10 points on every query
    shifted_down = {**base, "i2t/R@1": base["i2t/R@1"] - 0.1}
    d = seeds_and_queries_difference([(shifted_up, base), (shifted_down, base)], "i2t/R@1", n=4000)
    assert d["per_seed"] == pytest.approx([10.0, -10.0]) and d["difference"] == pytest.approx(0.0)
    # resampled seed pairs average to -10, 0 or +10 (with probability 1/4, 1/2, 1/4): the 95% interval spans both
    assert d["low"] == pytest.approx(-10.0) and d["high"] == pytest.approx(10.0)
    one = seeds_and_queries_difference([(shifted_up, base)], "i2t/R@1")
    assert one["low"] == pytest.approx(10.0) and one["high"] == pytest.approx(10.0) and one["seeds"] == 1
    same = seeds_and_queries_difference([(base, base), (base, base)], "rsum")
    assert same["low"] == same["high"] == same["difference"] == 0.0


def test_seeds_scored_on_one_test_set_share_its_image_resample():
    """Five seeds that agree query by query on one test set are one test sample, not five: the
    interval must be as wide as one seed's (independent image resamples per seed would shrink it
    by about sqrt(5), the coverage failure of averaging the test sample's variance away)."""
    rng = np.random.default_rng(3)
    a, b = _rankings(rng), _rankings(rng, p_i2t=0.4)
    one = seeds_and_queries_difference([(a, b)], "i2t/R@1", n=3000)
    five = seeds_and_queries_difference([(a, b)] * 5, "i2t/R@1", n=3000)
    assert five["difference"] == pytest.approx(one["difference"])
    assert (five["high"] - five["low"]) == pytest.approx(one["high"] - one["low"], rel=0.1)
    # on five different test sets (clusters), the same five pairs are five test samples: narrower
    apart = seeds_and_queries_difference([(a, b)] * 5, "i2t/R@1", n=3000, clusters=range(5))
    assert (apart["high"] - apart["low"]) < 0.7 * (one["high"] - one["low"]) and apart["test_sets"] == 5


def test_the_family_wise_interval_comes_from_the_same_draws_and_is_as_wide_as_its_level_says():
    """One pair on one test set: the interval is over test images alone, so a normal approximation
    of the paired per-image differences gives its width at any level."""
    rng = np.random.default_rng(4)
    a, b = _rankings(rng), _rankings(rng, p_i2t=0.4)
    d = seeds_and_queries_difference([(a, b)], "i2t/R@1", n=20000, family_level=0.999)
    plain = seeds_and_queries_difference([(a, b)], "i2t/R@1", n=20000)
    assert (d["low"], d["high"]) == (plain["low"], plain["high"])  # the 95% interval is unchanged
    assert d["family_low"] < d["low"] < d["high"] < d["family_high"] and d["family_level"] == 0.999
    se = 100 * (a["i2t/R@1"] - b["i2t/R@1"]).std() / np.sqrt(300)
    assert (d["family_high"] - d["family_low"]) / 2 == pytest.approx(3.29 * se, rel=0.12)  # z at 0.9995
