"""`vlr.metrics.relevance`: scene and label relevance against brute force, the evaluator's keys."""

import itertools

import numpy as np
import pytest
import torch

from vlr.errors import ConfigError
from vlr.metrics import GradedRelevance, retrieval_metrics
from vlr.metrics.relevance import build_relevance, labels_relevance, relevance_kinds, scene_relevance


def _brute_scene(a, b):
    """The docstring's formula, by enumerating every one-to-one matching of the smaller scene's
    objects into the larger one's."""
    if not a and not b:
        return 0.0
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    best = 0.0
    for chosen in itertools.permutations(range(len(large)), len(small)):
        total = 0.0
        for o, j in zip(small, chosen, strict=True):
            p = large[j]
            keys = sorted(set(o) | set(p))
            total += sum(o.get(k) == p.get(k) for k in keys) / len(keys)
        best = max(best, total)
    return best / max(len(a), len(b))


def _random_scenes(rng, n):
    attrs = {"shape": "abcd", "colour": "rgbyop", "size": "LS", "position": "lrtbm"}
    return [
        [{k: str(rng.choice(list(v))) for k, v in attrs.items()} for _ in range(int(rng.integers(1, 5)))]
        for _ in range(n)
    ]


def test_scene_relevance_is_the_best_matching_of_objects():
    rng = np.random.default_rng(0)
    scenes = _random_scenes(rng, 30)
    scenes.append([dict(o) for o in reversed(scenes[0])])  # the same objects in another order
    got = scene_relevance(scenes)
    want = torch.tensor([[_brute_scene(a, b) for b in scenes] for a in scenes])
    assert torch.allclose(got, want.float(), atol=1e-6)
    assert torch.equal(got, got.T) and float(got.min()) >= 0 and float(got.max()) <= 1
    assert got[0, -1] == 1.0  # identical scenes, whatever the order of their objects
    # 1 only for identical scenes (as multisets of objects)
    same = {(i, j) for i in range(len(scenes)) for j in range(len(scenes)) if got[i, j] == 1.0}
    key = [sorted(tuple(sorted(o.items())) for o in s) for s in scenes]
    assert same == {(i, j) for i in range(len(scenes)) for j in range(len(scenes)) if key[i] == key[j]}


def test_a_worked_example():
    big_red = {"shape": "circle", "colour": "red", "size": "large", "position": "left"}
    small_blue = {"shape": "square", "colour": "blue", "size": "small", "position": "top"}
    moved = dict(big_red, position="right")
    rel = scene_relevance([[big_red], [big_red, small_blue], [small_blue, moved]])
    # one of two objects matched exactly: 1/2; square exact + circle 3 of 4 attributes: 1.75/2
    assert rel[0, 1] == pytest.approx(0.5) and rel[1, 2] == pytest.approx(0.875) and rel[0, 2] == pytest.approx(3 / 8)


def test_labels_relevance_shares_labels():
    assert torch.equal(labels_relevance(torch.tensor([0, 1, 0])), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))
    multi = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    assert torch.allclose(labels_relevance(multi), torch.tensor([[1.0, 0.5, 0], [0.5, 1, 0], [0, 0, 0]]))


def _ndcg(scores, gains, k):
    order = np.argsort(-scores, kind="stable")[:k]
    dcg = np.sum(gains[order] / np.log2(np.arange(len(order)) + 2))
    ideal = np.sort(gains)[::-1][:k]
    idcg = np.sum(ideal / np.log2(np.arange(len(ideal)) + 2))
    return dcg / idcg if idcg > 0 else 0.0


def test_image_level_relevance_grades_every_direction_and_names_its_keys():
    """A per-image relevance S: a caption has its image's row; every direction's NDCG against
    a brute-force loop, the keys named after the relevance, rsum_single from the primary one."""
    g = torch.Generator().manual_seed(1)
    n_img, t2i = 6, torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 5, 5])
    img, txt = torch.randn(n_img, 4, generator=g), torch.randn(len(t2i), 4, generator=g)
    S = torch.rand(n_img, n_img, generator=g)
    S = (S + S.T) / 2
    rouge = torch.rand(len(t2i), n_img, generator=g)
    m = retrieval_metrics(
        img, txt, t2i, relevance=[GradedRelevance("scene", S, "image"), GradedRelevance("rouge_l", rouge)], ndcg_ks=(3,)
    )
    sims_i, T, X = (img @ img.T).numpy(), (txt @ txt.T).numpy(), (img @ txt.T).numpy()
    s, t = S.numpy().astype(np.float64), t2i.numpy()
    first = [int(np.flatnonzero(t == i)[0]) for i in range(n_img)]
    others = lambda n, q: np.array([j for j in range(n) if j != q])  # noqa: E731
    want = {
        "i2i": np.mean([_ndcg(sims_i[i, others(n_img, i)], s[i, others(n_img, i)], 3) for i in range(n_img)]),
        "t2t": np.mean([_ndcg(T[q, others(len(t), q)], s[i, t][others(len(t), q)], 3) for i, q in enumerate(first)]),
        "i2t": np.mean([_ndcg(X[i], s[i, t], 3) for i in range(n_img)]),
        "t2i": np.mean([_ndcg(X[:, c], s[t[c]], 3) for c in first]),
    }
    for direction, value in want.items():
        assert m[f"{direction}/scene_NDCG@3"] == pytest.approx(100 * value, abs=1e-4), direction
    assert "i2x/scene_NDCG@3" in m and "t2x/rouge_l_NDCG@3" in m and "i2i/NDCG@3" not in m
    assert "i2i/scene_NDCG@10" not in m  # computed for rsum_single only
    full = retrieval_metrics(img, txt, t2i, relevance=[GradedRelevance("scene", S, "image")], ndcg_ks=(10,))
    assert m["rsum_single"] == pytest.approx(full["i2i/scene_NDCG@10"] + full["t2t/scene_NDCG@10"])


def test_the_config_chooses_the_kinds_and_missing_ground_truth_is_one_clear_error():
    assert relevance_kinds({"name": "scene", "also": ["rouge_l", "scene"]}) == ["scene", "rouge_l"]
    assert relevance_kinds({"name": "cxc", "also": ["rouge_l"]}) == ["rouge_l"]
    with pytest.raises(ConfigError, match="relevance 'bleu' is not one of"):
        relevance_kinds({"name": "bleu"})
    targets = {"captions": ["a b", "c d"], "text_to_image": torch.tensor([0, 1]), "num_images": 2, "scenes": None}
    with pytest.raises(ConfigError, match="relevance=scene needs each image's scene .* of flickr"):
        build_relevance({"name": "scene"}, targets, "the test split of flickr")
    built = build_relevance({"name": "rouge_l"}, {**targets, "cache_dir": None})
    assert list(built) == ["rouge_l"] and built["rouge_l"].matrix.shape == (2, 2)
