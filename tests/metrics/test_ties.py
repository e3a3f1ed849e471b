"""Tie rules: the exact expected metrics against Monte Carlo tie-breaking, and chance for a constant model."""

import math

import numpy as np
import pytest
import torch

from tests.metrics.brute_force import brute_force_metrics
from vlr.metrics import neighbourhood_overlap, retrieval_metrics

RUNS = 400


def _tied_case(seed=0, n_img=14):
    """Quantised embeddings with duplicated rows: many exact score ties, distinct scores >= 1/16 apart."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(2, 5, (n_img,), generator=g)
    t2i = torch.repeat_interleave(torch.arange(n_img), counts)
    img = torch.randint(-1, 2, (n_img, 3), generator=g).double() / 4
    img[3] = img[2]  # duplicated images
    txt = img[t2i] + torch.randint(-1, 2, (t2i.numel(), 3), generator=g).double() / 4
    txt[5] = txt[7]  # duplicated captions of different images
    txt[1] = txt[9]
    labels = torch.randint(0, 3, (n_img,), generator=g)
    rel = torch.randint(0, 4, (t2i.numel(), n_img), generator=g).double() / 3
    return img, txt, t2i, labels, rel


def _monte_carlo(img, txt, t2i, labels, rel, ks, ndcg_ks):
    rng = np.random.default_rng(0)
    runs = [
        brute_force_metrics(img, txt, t2i, ks=ks, labels=labels.numpy(), rel=rel.numpy(), ndcg_ks=ndcg_ks, tiebreak=rng)
        for _ in range(RUNS)
    ]
    keys = [k for k in runs[0] if not k.endswith("medr")]  # a median of ranks is not an expectation
    return {k: (np.mean([r[k] for r in runs]), np.std([r[k] for r in runs]) / math.sqrt(RUNS)) for k in keys}


def test_expected_metrics_equal_monte_carlo_tie_breaking():
    img, txt, t2i, labels, rel = _tied_case()
    ks, ndcg_ks = (1, 3, 5, 10), (3, 10)
    ours = retrieval_metrics(img, txt, t2i, image_labels=labels, relevance=rel, ks=ks, ndcg_ks=ndcg_ks)
    mc = _monte_carlo(img, txt, t2i, labels, rel, ks, ndcg_ks)
    strict = retrieval_metrics(
        img, txt, t2i, image_labels=labels, relevance=rel, ks=ks, ndcg_ks=ndcg_ks, ties="optimistic"
    )
    differs = 0
    for key, (mean, se) in mc.items():
        assert ours[key] == pytest.approx(mean, abs=4.5 * se + 1e-9), (key, ours[key], mean, se)
        differs += abs(strict[key] - ours[key]) > 1e-6
    assert differs > 10  # the case really has ties that matter


def test_pessimistic_and_optimistic_bound_the_expectation():
    img, txt, t2i, labels, rel = _tied_case(seed=1)
    m = {
        t: retrieval_metrics(img, txt, t2i, image_labels=labels, relevance=rel, ties=t)
        for t in ("pessimistic", "expected", "optimistic")
    }
    for key in m["expected"]:
        lo, mid, hi = m["pessimistic"][key], m["expected"][key], m["optimistic"][key]
        if key.endswith(("medr", "meanr")):
            lo, hi = hi, lo  # lower ranks are better
        assert lo - 1e-9 <= mid <= hi + 1e-9, key
    # optimistic is the old rule: ranks count strictly higher scores only (brute force, stable argsort
    # puts the positive first only by luck, so compare with a hand count instead)
    scores = img @ txt.T
    best = torch.stack([scores[i, t2i == i].max() for i in range(img.shape[0])])
    strict_r1 = 100.0 * ((scores > best[:, None]).sum(1) == 0).double().mean()
    assert m["optimistic"]["i2t/R@1"] == pytest.approx(float(strict_r1))


def test_constant_model_scores_chance():
    n_img, caps = 20, 5
    t2i = torch.arange(n_img).repeat_interleave(caps)
    n_txt = t2i.numel()
    same = torch.ones(n_img, 4)
    m = retrieval_metrics(
        same,
        torch.ones(n_txt, 4),
        t2i,
        image_labels=torch.arange(n_img) % 4,
        relevance=torch.rand(n_txt, n_img, dtype=torch.float64),
    )
    for k in (1, 5, 10):
        assert m[f"t2i/R@{k}"] == pytest.approx(100.0 * k / n_img)
        # i2t: P(some of the 5 captions among the first k of 100 in random order)
        assert m[f"i2t/R@{k}"] == pytest.approx(100.0 * (1 - math.comb(n_txt - caps, k) / math.comb(n_txt, k)))
        # t2t: 4 relevant among the 99 other captions
        assert m[f"t2t/R@{k}"] == pytest.approx(100.0 * (1 - math.comb(n_txt - 1 - 4, k) / math.comb(n_txt - 1, k)))
        # i2i: 4 others share the label among 19
        assert m[f"i2i/R@{k}"] == pytest.approx(100.0 * (1 - math.comb(19 - 4, k) / math.comb(19, k)))
    assert m["t2i/meanr"] == pytest.approx((n_img - 1) / 2 + 1)  # E[rank] of 1 among 20
    assert m["i2t/meanr"] == pytest.approx((n_txt - caps) / (caps + 1) + 1)
    assert m["rsum"] == pytest.approx(sum(m[f"{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10)))
    assert m["rsum"] < 151  # chance for 20 images x 5 captions, not 600
    optimistic = retrieval_metrics(same, torch.ones(n_txt, 4), t2i, ties="optimistic")
    assert optimistic["rsum"] == pytest.approx(600.0)  # what the old rule reported
    pessimistic = retrieval_metrics(same, torch.ones(n_txt, 4), t2i, ties="pessimistic")
    assert pessimistic["t2i/R@10"] == 0.0


def test_constant_model_ndcg_is_the_mean_gain_at_every_position():
    n_img = 12
    t2i = torch.arange(n_img).repeat_interleave(2)
    rel = torch.rand(2 * n_img, n_img, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    m = retrieval_metrics(torch.ones(n_img, 3), torch.ones(2 * n_img, 3), t2i, relevance=rel, ndcg_ks=(5,))
    first = torch.arange(n_img) * 2
    disc = 1 / torch.log2(torch.arange(5, dtype=torch.float64) + 2)
    expect = []
    for i in range(n_img):
        gains = torch.cat([rel[first[i], :i], rel[first[i], i + 1 :]])
        expect.append(gains.mean() * disc.sum() / (gains.sort(descending=True).values[:5] * disc).sum())
    assert m["i2i/rouge_l_NDCG@5"] == pytest.approx(100 * float(torch.stack(expect).mean()))


def test_overlap_counts_ties_at_the_kth_place_fractionally():
    g = torch.Generator().manual_seed(0)
    q = torch.randint(-1, 2, (30, 3), generator=g).float()
    r = torch.randint(-1, 2, (30, 3), generator=g).float()
    rng = np.random.default_rng(1)
    for k in (1, 4):
        runs = []
        for _ in range(RUNS):
            a, b = q.numpy() @ q.numpy().T, r.numpy() @ r.numpy().T
            a, b = a + rng.uniform(0, 1e-4, a.shape), b + rng.uniform(0, 1e-4, b.shape)
            np.fill_diagonal(a, -np.inf)
            np.fill_diagonal(b, -np.inf)
            na, nb = np.argsort(-a, axis=1)[:, :k], np.argsort(-b, axis=1)[:, :k]
            runs.append(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=False)]))
        ours = neighbourhood_overlap(q, r, k)
        assert ours == pytest.approx(np.mean(runs), abs=4.5 * np.std(runs) / math.sqrt(RUNS) + 1e-9), k
    assert neighbourhood_overlap(torch.ones(10, 2), torch.randn(10, 2), 3) == pytest.approx(3 / 9)


def test_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="evaluation.ties must be one of"):
        retrieval_metrics(torch.randn(3, 2), torch.randn(3, 2), torch.arange(3), ties="random")
