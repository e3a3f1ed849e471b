"""experiments/paired.py: tests over independent pairs (against independent computations), and
the paired bootstrap over test images from per-query rankings."""

import itertools

import numpy as np
import pytest
from safetensors.numpy import save_file
from scipy import stats

from experiments.paired import (
    compare_pairs,
    holm,
    non_inferiority,
    paired_difference,
    paired_t,
    paired_table,
    seeds_and_queries_difference,
    sign_flip_p,
    smallest_detectable,
)


def test_paired_t_is_scipys_ttest_rel():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 2.0, 12), rng.normal(0.0, 2.0, 12)
    got = paired_t(a - b)
    want = stats.ttest_rel(a, b)
    assert got["t"] == pytest.approx(want.statistic) and got["p"] == pytest.approx(want.pvalue)
    low, high = want.confidence_interval(0.95)
    assert (got["low"], got["high"]) == (pytest.approx(low), pytest.approx(high))
    assert got["n"] == 12 and got["sd"] == pytest.approx(np.std(a - b, ddof=1))
    with pytest.raises(ValueError, match="at least 2 pairs, got 1"):
        paired_t([1.0])


@pytest.mark.parametrize("n", [1, 4, 7, 10])
def test_sign_flip_is_the_brute_force_enumeration(n):
    rng = np.random.default_rng(n)
    d = rng.normal(0.5, 1.0, n)
    observed = abs(d.mean())
    flips = [abs(np.mean(np.array(s) * d)) for s in itertools.product((1.0, -1.0), repeat=n)]
    assert sign_flip_p(d) == pytest.approx(np.mean([f >= observed - 1e-12 for f in flips]))


def test_sign_flip_floor_and_ties():
    assert sign_flip_p(np.arange(1.0, 11.0)) == pytest.approx(2 / 1024)  # all positive: the smallest p of 10 pairs
    assert sign_flip_p([1.0, -1.0, 1.0, -1.0]) == 1.0  # every assignment is at least as extreme as a mean of 0
    with pytest.raises(ValueError, match="at most 22 pairs"):
        sign_flip_p(np.ones(23))


def test_holm_on_a_known_example():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4x, 3x, 2x, 1x = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_smallest_detectable_effect_has_the_stated_power():
    sd, n = 3.0, 10
    effect = smallest_detectable(sd, n)
    rng = np.random.default_rng(5)
    samples = rng.normal(effect, sd, (40000, n))
    t = samples.mean(1) / (samples.std(1, ddof=1) / np.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(0.8, abs=0.01)
    # many pairs: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n)
    assert smallest_detectable(sd, 400) == pytest.approx((1.959964 + 0.841621) * sd / 20, rel=0.01)


def test_non_inferiority_verdicts():
    near = np.array([-0.2, 0.1, 0.3, -0.1, 0.0, 0.2, -0.3, 0.1, 0.0, 0.1])
    assert non_inferiority(near, margin=1.0)["verdict"] == "non-inferior"
    assert non_inferiority(near - 5.0, margin=1.0)["verdict"] == "inferior"
    assert non_inferiority(near * 20, margin=1.0)["verdict"] == "inconclusive"
    one_sided = stats.ttest_1samp(near, -1.0, alternative="greater")
    assert one_sided.pvalue < 0.05 and non_inferiority(near, 1.0)["low"] == pytest.approx(
        near.mean() - stats.t.ppf(0.95, 9) * near.std(ddof=1) / np.sqrt(10)
    )
    full = compare_pairs(near)
    assert full["p_sign_flip"] == pytest.approx(sign_flip_p(near)) and full["diffs"] == list(near)


def test_a_cluster_bootstrap_over_too_few_test_sets_is_refused():
    rng = np.random.default_rng(2)
    a, b = _rankings(rng), _rankings(rng, p_i2t=0.4)
    with pytest.raises(ValueError, match="2 test sets: a cluster bootstrap needs at least 10"):
        seeds_and_queries_difference([(a, b)] * 4, "i2t/R@1", clusters=[0, 0, 1, 1])


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
    # on ten different test sets (clusters), the same ten pairs are ten test samples: narrower
    apart = seeds_and_queries_difference([(a, b)] * 10, "i2t/R@1", n=3000, clusters=range(10))
    assert (apart["high"] - apart["low"]) < 0.5 * (one["high"] - one["low"]) and apart["test_sets"] == 10


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
