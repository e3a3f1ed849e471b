import math

import numpy as np
import pytest
import torch

from tests.metrics.brute_force import brute_force_metrics
from vlr.metrics import retrieval_metrics


def _random_case(n_img=40, dim=12, seed=0, max_caps=7, min_caps=1):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(min_caps, max_caps + 1, (n_img,), generator=g)
    t2i = torch.repeat_interleave(torch.arange(n_img), counts)
    t2i = t2i[torch.randperm(t2i.numel(), generator=g)]  # captions in any order
    img = torch.randn(n_img, dim, generator=g, dtype=torch.float64)
    txt = img[t2i] + 1.5 * torch.randn(t2i.numel(), dim, generator=g, dtype=torch.float64)
    return img, txt, t2i, g


def _assert_same(ours, ref):
    assert set(ours) == set(ref), set(ours) ^ set(ref)
    for key in ref:
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), key


def test_matches_brute_force_variable_captions_single_label():
    img, txt, t2i, g = _random_case(seed=1)
    labels = torch.randint(0, 6, (img.shape[0],), generator=g)
    rel = torch.rand(t2i.numel(), img.shape[0], generator=g, dtype=torch.float64)
    ours = retrieval_metrics(
        img, txt, t2i, image_labels=labels, relevance=rel, ks=(1, 3, 5, 10, 20), ndcg_ks=(5, 10, 25)
    )
    ref = brute_force_metrics(
        img, txt, t2i, ks=(1, 3, 5, 10, 20), labels=labels.numpy(), rel=rel.numpy(), ndcg_ks=(5, 10, 25)
    )
    _assert_same(ours, ref)


def test_matches_brute_force_multilabel():
    img, txt, t2i, g = _random_case(seed=2, n_img=30)
    labels = torch.rand(30, 8, generator=g) < 0.15  # some images share nothing with anyone
    ours = retrieval_metrics(img, txt, t2i, image_labels=labels, ks=(2, 7))
    ref = brute_force_metrics(img, txt, t2i, ks=(2, 7), labels=labels.numpy())
    _assert_same(ours, ref)


def test_folds_are_mean_of_consecutive_blocks():
    img, txt, t2i, g = _random_case(seed=3, n_img=50, min_caps=2)
    labels = torch.randint(0, 4, (50,), generator=g)
    rel = torch.rand(t2i.numel(), 50, generator=g, dtype=torch.float64)
    ours = retrieval_metrics(img, txt, t2i, folds=5, image_labels=labels, relevance=rel, ndcg_ks=(3, 5))
    per_fold = []
    for f in range(5):
        lo, hi = 10 * f, 10 * f + 10
        cap = np.where((t2i.numpy() >= lo) & (t2i.numpy() < hi))[0]
        per_fold.append(
            brute_force_metrics(
                img[lo:hi],
                txt[cap],
                t2i[cap] - lo,
                labels=labels[lo:hi].numpy(),
                rel=rel[cap][:, lo:hi].numpy(),
                ndcg_ks=(3, 5),
            )
        )
    ref = {k: np.mean([p[k] for p in per_fold]) for k in per_fold[0]}
    _assert_same(ours, ref)
    whole = retrieval_metrics(img, txt, t2i)
    assert whole["rsum"] < ours["rsum"]  # 10-image galleries are easier than 50


def test_hand_checked_three_images():
    # img0=[1,0], img1=[0,1], img2=[-1,0]; captions 0,1 -> img0, 2,3 -> img1, 4,5 -> img2.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    txt = torch.tensor(
        [[0.9, 0.1], [0.05, 1.0], [0.1, 0.9], [-1.0, 0.2], [-0.9, -0.1], [0.5, 0.5]], dtype=torch.float64
    )
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    m = retrieval_metrics(img, txt, t2i, ks=(1, 2))
    # img0 row: c0 .9 > c5 .5 > c2 .1 > c1 .05 ...      -> best positive (c0) at rank 0
    # img1 row: c1 1 > c2 .9 > ...                        -> best positive (c2) at rank 1
    # img2 row: c3 1 > c4 .9 > ...                        -> best positive (c4) at rank 1
    assert m["i2t/R@1"] == pytest.approx(100 / 3)
    assert m["i2t/R@2"] == pytest.approx(100.0)
    assert m["i2t/medr"] == 2.0  # floor(median([0,1,1])) + 1
    assert m["i2t/meanr"] == pytest.approx(2 / 3 + 1)
    # t2i ranks: c0 0, c1 1 (img1 scores 1 > .05), c2 0, c3 1 (img2 1 > .2), c4 0,
    # c5 2 (.5 > .5? no: img0 .5, img1 .5 > -.5 -> 2)
    assert m["t2i/R@1"] == pytest.approx(50.0)
    assert m["t2i/R@2"] == pytest.approx(100 * 5 / 6)
    assert m["t2i/medr"] == 1.0  # median([0,0,0,1,1,2]) = 0.5 -> floor 0 + 1
    assert m["t2i/meanr"] == pytest.approx(4 / 6 + 1)
    assert m["rsum"] == pytest.approx(100 / 3 + 100 + 100 + 50 + 100 + 100)


def test_hand_checked_ndcg():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    txt = img.repeat_interleave(2, dim=0)
    t2i = torch.tensor([0, 0, 1, 1, 2, 2])
    rel = torch.zeros(6, 3, dtype=torch.float64)
    rel[0] = torch.tensor([1.0, 0.2, 0.6])  # first caption of img0
    m = retrieval_metrics(img, txt, t2i, relevance=rel, ndcg_ks=(1, 10))
    # img0 query: img1 (sim 0) ranks before img2 (sim -1); gains .2 then .6
    dcg = 0.2 / math.log2(2) + 0.6 / math.log2(3)
    idcg = 0.6 / math.log2(2) + 0.2 / math.log2(3)
    # img1's first caption (c2) and img2's (c4) have all-zero relevance rows -> NDCG 0 by convention
    assert m["i2i/rouge_l_NDCG@10"] == pytest.approx(100 * (dcg / idcg) / 3)
    assert m["i2i/rouge_l_NDCG@1"] == pytest.approx(100 * (0.2 / 0.6) / 3)


def test_no_full_matrix_needed_chunks(monkeypatch):
    # Force tiny chunks: results must not depend on chunking.
    import vlr.metrics.ranking as ranking

    img, txt, t2i, g = _random_case(seed=4, n_img=25)
    rel = torch.rand(t2i.numel(), 25, generator=g, dtype=torch.float64)
    full = retrieval_metrics(img, txt, t2i, relevance=rel)
    monkeypatch.setattr(ranking, "CHUNK_ELEMENTS", 37)
    chunked = retrieval_metrics(img, txt, t2i, relevance=rel)
    _assert_same(chunked, full)


def test_errors_are_clear():
    img = torch.randn(4, 8)
    txt = torch.randn(6, 8)
    with pytest.raises(ValueError, match=r"text_to_image\[5\] = 9 points to a missing image \(there are 4 images\)"):
        retrieval_metrics(img, txt, torch.tensor([0, 0, 1, 2, 3, 9]))
    with pytest.raises(ValueError, match="image_emb has dim 8, text_emb has dim 5"):
        retrieval_metrics(img, torch.randn(6, 5), torch.tensor([0, 0, 1, 2, 3, 3]))
    with pytest.raises(ValueError, match="folds=3 does not divide the 4 images"):
        retrieval_metrics(img, txt, torch.tensor([0, 0, 1, 2, 3, 3]), folds=3)
    with pytest.raises(ValueError, match="image 2 has no caption"):
        retrieval_metrics(img, txt, torch.tensor([0, 0, 1, 1, 3, 3]))
    with pytest.raises(ValueError, match="non-finite"):
        retrieval_metrics(img, txt * float("nan"), torch.tensor([0, 0, 1, 2, 3, 3]))


@pytest.mark.parametrize(
    "change, error, message",
    [
        (dict(image_emb=torch.zeros(4)), ValueError, r"image_emb must be 2-D \[items, dim\], got shape \(4,\)"),
        (dict(text_emb=torch.zeros(8, 3, dtype=torch.long)), TypeError, "text_emb must be floating point"),
        (dict(text_emb=torch.zeros(8, 5)), ValueError, "dimensions differ: image_emb has dim 3, text_emb has dim 5"),
        (dict(image_labels=torch.zeros(3, dtype=torch.long)), ValueError, "image_labels has 3 rows but there are 4"),
        (dict(image_labels=torch.zeros(4, 2, 2)), ValueError, "1-D class ids or a 2-D multi-hot matrix, got 3-D"),
    ],
)
def test_inputs_of_the_wrong_shape_or_type_are_named(change, error, message):
    args = dict(image_emb=torch.randn(4, 3), text_emb=torch.randn(8, 3), text_to_image=torch.arange(4).repeat(2))
    args |= change
    with pytest.raises(error, match=message):
        retrieval_metrics(args.pop("image_emb"), args.pop("text_emb"), args.pop("text_to_image"), **args)


def test_half_precision_embeddings_score_as_float32_and_a_bare_tensor_is_rouge_l():
    """fp16/bf16 embeddings (autocast) are scored in float32: the same numbers as the float32
    copy; a bare [captions, images] relevance tensor is named rouge_l, and without 10 among the
    NDCG cut-offs only rsum_single keeps NDCG@10 (here, and in the per-query record)."""
    gen = torch.Generator().manual_seed(0)
    img, txt = torch.randn(4, 3, generator=gen), torch.randn(8, 3, generator=gen)
    t2i = torch.arange(4).repeat(2)
    relevance = torch.rand(8, 4, generator=gen)
    record: dict = {}
    half = retrieval_metrics(img.half(), txt.bfloat16(), t2i, relevance=relevance, ndcg_ks=(20,), record=record)
    full = retrieval_metrics(img.half().float(), txt.bfloat16().float(), t2i, relevance=relevance, ndcg_ks=(20,))
    assert half == full
    assert "t2t/rouge_l_NDCG@20" in half and not any(k.endswith("NDCG@10") for k in half)
    assert not any(k.endswith("NDCG@10") for k in record)
    tenth = retrieval_metrics(img, txt, t2i, relevance=relevance, ndcg_ks=(10,))
    assert half["rsum_single"] != 0 and tenth["rsum_single"] == pytest.approx(
        tenth["i2i/rouge_l_NDCG@10"] + tenth["t2t/rouge_l_NDCG@10"]
    )
