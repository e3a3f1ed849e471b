"""Re-ranked recall (`vlr.metrics.rerank`): the plain ranking when ITM is ITC over every candidate,
an explicit re-sort otherwise, and the evaluator's ``rerank/`` keys beside the plain ones."""

import pytest
import torch

from vlr.metrics import RetrievalEvaluator, retrieval_metrics
from vlr.metrics.rerank import reranked_metrics, top_k_candidates


def _tied_case(seed=0, n_img=12):
    """Quarter-integer embeddings: dot products are exact in float64, so many scores tie exactly."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(1, 4, (n_img,), generator=g)
    t2i = torch.repeat_interleave(torch.arange(n_img), counts)
    img = torch.randint(-1, 2, (n_img, 3), generator=g).double() / 4
    img[3] = img[2]
    txt = img[t2i] + torch.randint(-1, 2, (t2i.numel(), 3), generator=g).double() / 4
    txt[1] = txt[4]
    return img, txt, t2i


def _itc_scorer(img, txt):
    """An "ITM head" that returns the ITC score of each (query, candidate) pair."""

    def score(direction, candidates):
        q, g = (img, txt) if direction == "i2t" else (txt, img)
        return (q[:, None, :] * g[candidates]).sum(-1)

    return score


@pytest.mark.parametrize("ties", ["expected", "pessimistic", "optimistic"])
def test_rerank_of_every_candidate_by_itc_is_the_plain_ranking(ties):
    img, txt, t2i = _tied_case()
    plain = retrieval_metrics(img, txt, t2i, ks=(1, 3, 5, 10), ties=ties)
    k = max(img.shape[0], txt.shape[0])  # every candidate of either direction
    rer = reranked_metrics(img, txt, t2i, k, _itc_scorer(img, txt), ks=(1, 3, 5, 10), ties=ties)
    assert set(rer) == {
        f"rerank/{d}/{m}" for d in ("i2t", "t2i") for m in ("R@1", "R@3", "R@5", "R@10", "medr", "meanr")
    } | {"rerank/rsum"}
    for key, value in rer.items():
        assert value == plain[key.removeprefix("rerank/")], key
    optimistic = retrieval_metrics(img, txt, t2i, ties="optimistic")
    expected = retrieval_metrics(img, txt, t2i, ties="expected")
    assert optimistic["i2t/R@1"] != expected["i2t/R@1"]  # the case has ties that matter


def _explicit_rank(query_scores, candidates, cand_scores, positives):
    """0-based rank of the best positive in the re-ranked order built by sorting (no ties)."""
    top = [int(c) for c in candidates]
    order = [top[i] for i in sorted(range(len(top)), key=lambda i: -float(cand_scores[i]))]
    rest = [j for j in sorted(range(len(query_scores)), key=lambda j: -float(query_scores[j])) if j not in top]
    ranked = order + rest
    return min(ranked.index(p) for p in positives)


@pytest.mark.parametrize("itc_weight", [0.0, 1.5])
def test_rerank_matches_an_explicit_resort(itc_weight):
    """The re-ranked order is the sort of pair score + itc_weight x ITC (BLIP's sum at weight 1),
    built here by hand."""
    g = torch.Generator().manual_seed(5)
    n_img = 15
    t2i = torch.repeat_interleave(torch.arange(n_img), torch.randint(1, 4, (n_img,), generator=g))
    img = torch.randn(n_img, 8, generator=g, dtype=torch.float64)
    txt = img[t2i] * 0.3 + torch.randn(t2i.numel(), 8, generator=g, dtype=torch.float64)
    itm = torch.randn(n_img, t2i.numel(), generator=g, dtype=torch.float64)  # a pair score per (image, caption)

    def score(direction, candidates):
        rows = torch.arange(candidates.shape[0])[:, None]
        return itm[rows, candidates] if direction == "i2t" else itm.T[rows, candidates]

    k = 4
    got = reranked_metrics(img, txt, t2i, k, score, ks=(1, 5, 10), itc_weight=itc_weight)
    sims = img @ txt.T
    combined = itm + itc_weight * sims
    ranks = {"i2t": [], "t2i": []}
    for i in range(n_img):
        cand = top_k_candidates(img[i : i + 1], txt, k)[0]
        positives = (t2i == i).nonzero().flatten().tolist()
        ranks["i2t"].append(_explicit_rank(sims[i], cand, combined[i, cand], positives))
    for c in range(t2i.numel()):
        cand = top_k_candidates(txt[c : c + 1], img, k)[0]
        ranks["t2i"].append(_explicit_rank(sims[:, c], cand, combined[cand, c], [int(t2i[c])]))
    for d, r in ranks.items():
        r = torch.tensor(r, dtype=torch.float64)
        for kk in (1, 5, 10):
            assert got[f"rerank/{d}/R@{kk}"] == pytest.approx(100 * float((r < kk).double().mean()), abs=1e-9)
        assert got[f"rerank/{d}/meanr"] == pytest.approx(float(r.mean()) + 1, abs=1e-9)
    plain = retrieval_metrics(img, txt, t2i)
    assert got["rerank/i2t/R@1"] != plain["i2t/R@1"]  # re-ranking changed something
    if itc_weight:  # and the ITC term changed the order of the pair score alone
        assert got != reranked_metrics(img, txt, t2i, k, score, ks=(1, 5, 10))


def test_evaluator_reports_rerank_beside_plain_with_dataset_indices():
    """The evaluator hands the scorer dataset indices; an ITC-equal scorer over every candidate
    reproduces the plain metrics under rerank/ names, single-modal keys are not duplicated."""
    img, txt, t2i = _tied_case(seed=2)
    ev = RetrievalEvaluator(t2i)
    perm_i, perm_t = torch.randperm(img.shape[0]), torch.randperm(txt.shape[0])
    ev.update(image_emb=img[perm_i], image_idx=perm_i)  # out of order, as DDP shards arrive
    ev.update(text_emb=txt[perm_t], text_idx=perm_t)
    seen = []

    def scorer(direction, queries, candidates):
        seen.append(direction)
        q, g = (img, txt) if direction == "i2t" else (txt, img)
        return (q[queries][:, None, :].float() * g[candidates].float()).sum(-1)

    ev.rerank_k, ev.pair_scorer = 10_000, scorer
    out = ev.compute()
    assert seen == ["i2t", "t2i"]
    rer = {k: v for k, v in out.items() if k.startswith("rerank/")}
    assert rer and all(v == out[k.removeprefix("rerank/")] for k, v in rer.items())
    assert not any(k.startswith("rerank/t2t") or k.startswith("rerank/i2i") for k in out)
    assert ev.rerank_info["k"] == 10_000 and "ITC" in ev.rerank_info["single_modal"]
    assert ev.rerank_info["itc_weight"] == 0.0 and "itc_weight" not in ev.rerank_info["metrics"]
    ev.rerank_itc_weight = 2.0  # a scorer that returns ITC, plus 2 x ITC: the same order again
    out = ev.compute()
    assert all(out[k] == v for k, v in rer.items())
    assert ev.rerank_info["itc_weight"] == 2.0 and "itc_weight x the ITC score" in ev.rerank_info["metrics"]


def test_the_evaluator_re_ranks_with_its_itc_weight():
    """A pair score that is not ITC: the evaluator's metrics at weight w are the re-ranking of
    pair score + w x ITC, and differ from weight 0's."""
    g = torch.Generator().manual_seed(7)
    n_img = 12
    t2i = torch.repeat_interleave(torch.arange(n_img), 3)
    img = torch.randn(n_img, 6, generator=g, dtype=torch.float64)
    txt = img[t2i] * 0.4 + torch.randn(t2i.numel(), 6, generator=g, dtype=torch.float64)
    itm = torch.randn(n_img, t2i.numel(), generator=g, dtype=torch.float64)

    def by_index(direction, queries, candidates):
        scores = itm if direction == "i2t" else itm.T
        return scores[queries[:, None], candidates]

    def rows(direction, candidates):
        return by_index(direction, torch.arange(candidates.shape[0]), candidates)

    out = {}
    for weight in (0.0, 3.0):
        ev = RetrievalEvaluator(t2i)
        ev.update(image_emb=img, image_idx=torch.arange(n_img))
        ev.update(text_emb=txt, text_idx=torch.arange(t2i.numel()))
        ev.rerank_k, ev.pair_scorer, ev.rerank_itc_weight = 5, by_index, weight
        out[weight] = {k: v for k, v in ev.compute().items() if k.startswith("rerank/")}
        assert out[weight] == reranked_metrics(img, txt, t2i, 5, rows, itc_weight=weight)
    assert out[0.0] != out[3.0]
