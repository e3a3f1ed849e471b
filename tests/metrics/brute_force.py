"""Independent, slow reference implementations (full matrices, one query at a time, argsort)."""

import numpy as np


def _summ(prefix, ranks, ks, medr):
    ranks = np.asarray(ranks)
    out = {f"{prefix}/R@{k}": 100.0 * np.mean(ranks < k) for k in ks}
    if medr:
        out[f"{prefix}/medr"] = np.floor(np.median(ranks)) + 1
        out[f"{prefix}/meanr"] = ranks.mean() + 1
    return out


def _rank_of_best(scores, relevant):
    order = np.argsort(-scores, kind="stable")
    return min(int(np.where(order == j)[0][0]) for j in relevant)


def brute_force_metrics(img, txt, t2i, ks=(1, 5, 10), labels=None, rel=None, ndcg_ks=(10, 20, 50), tiebreak=None):
    """``tiebreak``: a numpy Generator; every score gets independent uniform noise far below
    the gap between distinct scores, which orders tied items uniformly at random (for Monte
    Carlo checks of the tie rules; use embeddings whose distinct scores differ by > 1e-6)."""
    img, txt, t2i = np.asarray(img, np.float64), np.asarray(txt, np.float64), np.asarray(t2i)
    n_img, n_txt = len(img), len(txt)

    def jitter(m):
        return m if tiebreak is None else m + tiebreak.uniform(0.0, 1e-7, m.shape)

    S = jitter(img @ txt.T)
    i2t = [_rank_of_best(S[i], np.where(t2i == i)[0]) for i in range(n_img)]
    t2i_r = [_rank_of_best(S[:, c], [t2i[c]]) for c in range(n_txt)]
    out = {**_summ("i2t", i2t, ks, True), **_summ("t2i", t2i_r, ks, True)}
    out["rsum"] = sum(100.0 * np.mean(np.asarray(r) < k) for r in (i2t, t2i_r) for k in (1, 5, 10))

    T = jitter(txt @ txt.T)
    t2t = []
    for c in range(n_txt):
        others = [j for j in range(n_txt) if j != c]
        rel_pos = [p for p, j in enumerate(others) if t2i[j] == t2i[c]]
        if rel_pos:
            t2t.append(_rank_of_best(T[c, others], rel_pos))
    out.update(_summ("t2t", t2t, ks, False))

    if labels is not None:
        labels = np.asarray(labels)
        sims_i = jitter(img @ img.T)
        i2i = []
        for i in range(n_img):
            others = [j for j in range(n_img) if j != i]
            if labels.ndim == 1:
                rel_pos = [p for p, j in enumerate(others) if labels[j] == labels[i]]
            else:
                rel_pos = [p for p, j in enumerate(others) if np.any(labels[j] & labels[i])]
            if rel_pos:
                i2i.append(_rank_of_best(sims_i[i, others], rel_pos))
        out.update(_summ("i2i", i2i, ks, False))

    if rel is not None:
        # a caption-level matrix [captions, images] (ROUGE-L's layout), named rouge_l
        graded = _graded(img, txt, t2i, np.asarray(rel, np.float64), "rouge_l", sorted({*ndcg_ks, 10}), jitter, S, T)
        out["rsum_single"] = graded["i2i/rouge_l_NDCG@10"] + graded["t2t/rouge_l_NDCG@10"]
        out |= {key: v for key, v in graded.items() if int(key.rsplit("@", 1)[1]) in ndcg_ks}
    return out


def _graded(img, txt, t2i, rel, name, ndcg_ks, jitter, S, T):
    """Every direction's NDCG under a caption-level relevance ``rel`` [captions, images]."""
    n_img, n_txt = len(img), len(txt)
    out = {}
    first = [int(np.where(t2i == i)[0].min()) for i in range(n_img)]
    sims_i = jitter(img @ img.T)
    for k in ndcg_ks:
        vals = []
        for i in range(n_img):
            others = np.array([j for j in range(n_img) if j != i])
            vals.append(_ndcg(sims_i[i, others], rel[first[i], others], k))
        out[f"i2i/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
        vals = []
        for i in range(n_img):
            q = first[i]
            others = np.array([j for j in range(n_txt) if j != q])
            vals.append(_ndcg(T[q, others], rel[others, i], k))
        out[f"t2t/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
        # graded cross-modal: every image queries all captions, every image's first caption all images
        vals = [_ndcg(S[i], rel[:, i], k) for i in range(n_img)]
        out[f"i2t/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
        vals = [_ndcg(S[:, c], rel[c], k) for c in first]
        out[f"t2i/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
        # mixed: one gallery of all images then all captions, the query removed
        vals = []
        for i in range(n_img):
            scores = np.concatenate([sims_i[i], S[i]])
            gains = np.concatenate([rel[first[i]], rel[:, i]])
            keep = np.arange(n_img + n_txt) != i
            vals.append(_ndcg(scores[keep], gains[keep], k))
        out[f"i2x/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
        vals = []
        for i in range(n_img):
            q = first[i]
            scores = np.concatenate([S[:, q], T[q]])
            gains = np.concatenate([rel[q], rel[:, i]])
            keep = np.arange(n_img + n_txt) != n_img + q
            vals.append(_ndcg(scores[keep], gains[keep], k))
        out[f"t2x/{name}_NDCG@{k}"] = 100.0 * np.mean(vals)
    return out


def _ndcg(scores, gains, k):
    order = np.argsort(-scores, kind="stable")[:k]
    disc = 1.0 / np.log2(np.arange(len(order)) + 2)
    dcg = np.sum(gains[order] * disc)
    ideal = np.sort(gains)[::-1][:k]
    idcg = np.sum(ideal * disc[: len(ideal)])
    return dcg / idcg if idcg > 0 else 0.0


def lcs_dp(a, b):
    """Textbook O(len(a) * len(b)) longest common subsequence length."""
    dp = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            dp[i][j] = dp[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(dp[i - 1][j], dp[i][j - 1])
    return dp[-1][-1]


def rouge_l_dp(candidate, references, beta=1.2):
    """coco-caption's ROUGE-L of one tokenised candidate against tokenised references."""
    precs, recs = [], []
    for ref in references:
        lcs = lcs_dp(candidate, ref)
        precs.append(lcs / len(candidate) if candidate else 0.0)
        recs.append(lcs / len(ref) if ref else 0.0)
    p, r = max(precs), max(recs)
    if p == 0 or r == 0:
        return 0.0
    return ((1 + beta**2) * p * r) / (r + beta**2 * p)
