"""Paired comparisons: tests over independent pairs, and bootstrap intervals over test images.

Over pairs (the imbalance study: each pair its own generator seed, so its own train and test
data): `paired_t`, the exact sign-flip test `sign_flip_p` (all 2^n sign assignments), `holm`
over a family of p-values, the smallest effect a paired t-test detects (`smallest_detectable`)
and a non-inferiority verdict (`non_inferiority`).

Over test images, for runs scored on one test set: reads the per-query results each run
wrote (``rankings.safetensors``: ``save_rankings=true`` in
``vlr.train`` or ``vlr.eval``). Test images are the resampling unit and a caption goes with its
image, so the captions of one image (which are not independent) stay together; both runs are
scored on the same resample (paired), so what varies between them is the model, not the sample.

    python -m experiments.paired RUN_A RUN_B [--metrics rsum rsum_single i2i/scene_NDCG@10] [--n 2000]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from vlr.sweeps.summary import SINGLE_MODAL_NDCG

RSUM = [f"{d}/R@{k}" for d in ("i2t", "t2i") for k in (1, 5, 10)]
SINGLE = ("i2i", "t2t")  # rsum_single: their NDCG@10 under the run's primary relevance
PRIMARY = "relevance/primary"  # the key `load_rankings` keeps the primary relevance's name under
DEFAULT_METRICS = ("rsum", "rsum_single", "i2t/R@1", "t2i/R@1", "i2i/R@1", "t2t/R@1")
MARGIN = 2.0  # rsum points: "no cross-modal cost" needs the whole interval inside ±MARGIN
MIN_CLUSTERS = 10  # fewer test sets than this: a cluster bootstrap cannot estimate their variance
MAX_SIGN_FLIP_PAIRS = 22  # 2^22 sign assignments, enumerated in chunks


# -- tests over independent pairs ------------------------------------------------------
def paired_t(diffs, level: float = 0.95) -> dict[str, float]:
    """Student's paired t-test of mean(diffs) = 0 (two-sided) and the ``level`` interval of the mean."""
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    if n < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {n}")
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    q = float(stats.t.ppf(0.5 + level / 2, n - 1))
    if se == 0.0:
        t, p = (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    else:
        t = mean / se
        p = float(2 * stats.t.sf(abs(t), n - 1))
    return {
        "mean": mean,
        "sd": sd,
        "n": n,
        "t": t,
        "p": p,
        "low": mean - q * se,
        "high": mean + q * se,
        "confidence": level,
    }


def sign_flip_p(diffs) -> float:
    """Exact two-sided sign-flip (permutation) p-value of mean(diffs) = 0: the share of all 2^n
    sign assignments whose |mean| is at least the observed one. Under the null each pair's
    difference is symmetric about 0, so every assignment is equally likely; the smallest
    attainable p is 2 / 2^n (10 pairs: 0.002)."""
    d = np.abs(np.asarray(diffs, dtype=np.float64))
    n = d.size
    if n == 0:
        raise ValueError("a sign-flip test needs at least 1 pair")
    if n > MAX_SIGN_FLIP_PAIRS:
        raise ValueError(f"exact sign-flip enumeration is for at most {MAX_SIGN_FLIP_PAIRS} pairs, got {n}")
    observed = abs(float(np.sum(diffs)))
    tolerance = 1e-9 * max(1.0, float(d.sum()))
    count, chunk = 0, 1 << min(n, 16)
    for start in range(0, 1 << n, chunk):
        codes = np.arange(start, min(start + chunk, 1 << n), dtype=np.int64)
        signs = 1.0 - 2.0 * ((codes[:, None] >> np.arange(n)) & 1)
        count += int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return count / float(1 << n)


def holm(pvalues) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order."""
    p = [float(x) for x in pvalues]
    m = len(p)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def smallest_detectable(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference a two-sided paired t-test at ``alpha`` detects with
    ``power``, for pair differences of standard deviation ``sd`` over ``n`` pairs (exact, from
    the noncentral t distribution)."""
    from scipy import optimize, stats

    if n < 2 or not sd > 0:
        return 0.0 if sd == 0 else math.nan
    df, crit = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(effect: float) -> float:
        nc = effect / (sd / math.sqrt(n))
        # the far tail (a significant result of the wrong sign) is negligible where power is 80%,
        # and scipy's noncentral t returns NaN there for large noncentrality
        lower = float(np.nan_to_num(stats.nct.cdf(-crit, df, nc)))
        return float(stats.nct.sf(crit, df, nc)) + lower - power

    high = sd
    while shortfall(high) < 0:
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high, xtol=1e-10 * sd))


def non_inferiority(diffs, margin: float, alpha: float = 0.05) -> dict[str, float | str]:
    """Is the arm's loss at most ``margin``? One-sided paired t bounds at ``alpha``:
    "non-inferior" (the lower bound of the mean difference lies above -margin), "inferior" (the
    upper bound lies below -margin), otherwise "inconclusive"."""
    t = paired_t(diffs, level=1 - 2 * alpha)
    verdict = "non-inferior" if t["low"] > -margin else ("inferior" if t["high"] < -margin else "inconclusive")
    return {"mean": t["mean"], "low": t["low"], "high": t["high"], "margin": margin, "verdict": verdict}


def compare_pairs(diffs) -> dict:
    """Everything the study reports of one family member: the paired t-test and its 95%
    interval, the exact sign-flip p-value, and the differences themselves."""
    return {**paired_t(diffs), "p_sign_flip": sign_flip_p(diffs), "diffs": [float(x) for x in diffs]}


def load_rankings(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    path = Path(run) / "rankings.safetensors" if Path(run).is_dir() else Path(run)
    if not path.is_file():
        raise SystemExit(f"{path}: no per-query rankings; run with save_rankings=true (vlr.train or vlr.eval)")
    rankings = load_file(str(path))
    info = path.parent / "evaluation.json"  # the run's own: which relevance rsum_single used
    primary = json.loads(info.read_text()).get("relevance", {}).get("primary") if info.is_file() else None
    if primary:
        rankings[PRIMARY] = np.array(primary)
    return rankings


def _per_image(r: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(sum of the query values, number of queries) per test image, for one per-query tensor.
    Image-query tensors have one row per image; caption-query tensors are summed per image;
    NaN (a query with nothing to find) counts as no query."""
    t2i = r["text_to_image"].astype(np.int64)
    n_img = int(t2i.max()) + 1
    values = r[key].astype(np.float64)
    ok = ~np.isnan(values)
    if values.shape[0] == n_img:
        return np.where(ok, values, 0.0), ok.astype(np.float64)
    return (
        np.bincount(t2i, weights=np.where(ok, values, 0.0), minlength=n_img),
        np.bincount(t2i, weights=ok.astype(np.float64), minlength=n_img),
    )


def components(metric: str, r: dict[str, np.ndarray]) -> list[str]:
    """The per-query keys a metric sums: rsum, the six cross-modal recalls; rsum_single, i2i and
    t2t NDCG@10 under the primary relevance (named in the run's evaluation.json, or the only
    relevance the rankings hold); a plain metric, itself."""
    if metric == "rsum":
        return RSUM
    if metric not in ("rsum_single", SINGLE_MODAL_NDCG):
        return [metric]
    graded = sorted({key.split("/")[1].rsplit("_NDCG@", 1)[0] for key in r if key.endswith("_NDCG@10")})
    primary = str(r[PRIMARY]) if PRIMARY in r else (graded[0] if len(graded) == 1 else None)
    if primary is None:
        raise SystemExit(f"metric {metric!r}: no evaluation.json names the primary relevance among {graded}")
    return [f"{d}/{primary}_NDCG@10" for d in SINGLE]


def _resampled(r: dict[str, np.ndarray], metric: str, weights: np.ndarray) -> np.ndarray:
    """The metric (x100, summed over its components) on each resample; ``weights`` [B, images]."""
    total = np.zeros(weights.shape[0])
    for key in components(metric, r):
        if key not in r:
            raise SystemExit(f"metric {metric!r} needs per-query {key!r}, which the rankings file does not hold")
        sums, counts = _per_image(r, key)
        total += 100.0 * (weights @ sums) / np.maximum(weights @ counts, 1e-12)
    return total


def paired_difference(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], metric: str, n: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """A minus B on the full test set, and the percentile bootstrap interval over test images."""
    if not np.array_equal(a["text_to_image"], b["text_to_image"]):
        raise SystemExit("the two runs were not evaluated on the same test set (text_to_image differs)")
    n_img = int(a["text_to_image"].max()) + 1
    full = np.ones((1, n_img))
    point = float(_resampled(a, metric, full)[0] - _resampled(b, metric, full)[0])
    weights = _image_weights(np.random.default_rng(seed), n_img, n)
    diffs = _resampled(a, metric, weights) - _resampled(b, metric, weights)
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": point, "low": float(lo), "high": float(hi), "n_boot": n, "level": level}


def _image_weights(rng: np.random.Generator, n_img: int, n: int) -> np.ndarray:
    return rng.multinomial(n_img, np.full(n_img, 1.0 / n_img), size=n).astype(np.float64)


def seeds_and_queries_difference(
    pairs: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]],
    metric: str,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    clusters: list | None = None,
    family_level: float | None = None,
) -> dict[str, float]:
    """A minus B over paired seeds: ``pairs`` holds, per seed, the rankings of A and of B (the
    same test set within a pair). ``clusters`` names each pair's test set (the generator seed of
    synthetic data, say); None: every pair was scored on one test set (runs of the same data).

    The point estimate is the mean over pairs of the full-test-set difference. The interval is a
    percentile bootstrap that resamples what varies: test sets (clusters) with replacement, then
    the seeds within each drawn test set, and that test set's images, with **one** image resample
    shared by all its seeds (they were scored on the same images, so the test sample's variance
    is not averaged away across seeds), A and B on the same draw. One pair: images only.
    ``family_level``: also the interval at that (multiplicity-adjusted) level, from the same draws,
    as ``family_low`` / ``family_high``.

    Between 2 and ``MIN_CLUSTERS`` - 1 test sets are refused: resampling so few clusters with
    replacement cannot estimate the variance between them (with two, half the draws repeat one
    test set), so the interval's coverage is far below its level. Independent pairs on their
    own test sets are compared with `paired_t` / `sign_flip_p` instead."""
    if not pairs:
        raise ValueError("no paired runs")
    clusters = list(clusters) if clusters is not None else [0] * len(pairs)
    if len(clusters) != len(pairs):
        raise ValueError("one cluster per pair")
    if 1 < len(set(clusters)) < MIN_CLUSTERS:
        raise ValueError(
            f"{len(set(clusters))} test sets: a cluster bootstrap needs at least {MIN_CLUSTERS}; compare pairs "
            "scored on their own test sets with experiments.paired.paired_t and sign_flip_p"
        )
    rng = np.random.default_rng(seed)
    points = []
    groups: dict = {}
    for (a, b), cluster in zip(pairs, clusters, strict=True):
        if not np.array_equal(a["text_to_image"], b["text_to_image"]):
            raise SystemExit("two paired runs were not evaluated on the same test set (text_to_image differs)")
        full = np.ones((1, int(a["text_to_image"].max()) + 1))
        points.append(float(_resampled(a, metric, full)[0] - _resampled(b, metric, full)[0]))
        groups.setdefault(cluster, []).append((a, b))
    # per test set: [seeds, n] differences, every seed under the same n image resamples
    per_set = []
    for members in groups.values():
        n_img = int(members[0][0]["text_to_image"].max()) + 1
        if any(int(a["text_to_image"].max()) + 1 != n_img for a, _ in members):
            raise SystemExit("pairs given one cluster were scored on test sets of different sizes")
        weights = _image_weights(rng, n_img, n)
        per_set.append(np.stack([_resampled(a, metric, weights) - _resampled(b, metric, weights) for a, b in members]))
    diffs = np.empty(n)
    for r in range(n):
        total, count = 0.0, 0
        for g in rng.integers(0, len(per_set), size=len(per_set)):  # test sets
            table = per_set[g]
            column = rng.integers(0, n)  # one image resample of this test set, for all its seeds
            drawn = rng.integers(0, table.shape[0], size=table.shape[0])  # seeds within it
            total, count = total + float(table[drawn, column].sum()), count + len(drawn)
        diffs[r] = total / count
    lo, hi = np.quantile(diffs, [(1 - level) / 2, 1 - (1 - level) / 2])
    family = {}
    if family_level is not None:
        f_lo, f_hi = np.quantile(diffs, [(1 - family_level) / 2, 1 - (1 - family_level) / 2])
        family = {"family_low": float(f_lo), "family_high": float(f_hi), "family_level": family_level}
    return {
        "difference": float(np.mean(points)),
        "low": float(lo),
        "high": float(hi),
        **family,
        "seeds": len(pairs),
        "test_sets": len(per_set),
        "per_seed": points,
        "n_boot": n,
        "level": level,
    }


def status(single: dict, cross: dict, margin: float = MARGIN) -> dict[str, str]:
    """What a comparison resolves.

    - single: "up" / "down" (the interval lies above / below 0) or "not resolved";
    - cross: "equivalent" (the whole interval inside ±margin), "cost" / "gain" (outside the
      margin and resolved below / above 0), or "not resolved";
    - claim (structure preservation raises single-modal retrieval at no cross-modal cost):
      "reproduces" (single up, cross equivalent or gain), "does not reproduce" (single down, or
      a cross-modal cost), "not resolved" (anything else: the data cannot tell; always with one
      seed, when ``seeds`` says so: the interval then covers the test sample only)."""
    if min(single.get("seeds", 2), cross.get("seeds", 2)) < 2:  # one seed: training randomness unmeasured
        return {"single": "not resolved", "cross": "not resolved", "claim": "not resolved"}
    s = "up" if single["low"] > 0 else ("down" if single["high"] < 0 else "not resolved")
    if -margin < cross["low"] and cross["high"] < margin:
        c = "equivalent"
    elif cross["high"] < 0:
        c = "cost"
    elif cross["low"] > 0:
        c = "gain"
    else:
        c = "not resolved"
    if s == "up" and c in ("equivalent", "gain"):
        claim = "reproduces"
    elif s == "down" or c == "cost":
        claim = "does not reproduce"
    else:
        claim = "not resolved"
    return {"single": s, "cross": c, "claim": claim}


def paired_table(run_a: Path, run_b: Path, metrics=DEFAULT_METRICS, n: int = 2000, seed: int = 0) -> str:
    a, b = load_rankings(run_a), load_rankings(run_b)
    rows = ["| metric | A − B | 95% CI | resolved |", "|---|---|---|---|"]
    for metric in metrics:
        try:
            d = paired_difference(a, b, metric, n, seed)
        except SystemExit as err:
            if "does not hold" in str(err):
                continue
            raise
        resolved = "yes" if d["low"] > 0 or d["high"] < 0 else "no"
        rows.append(f"| {metric} | {d['difference']:+.2f} | [{d['low']:+.2f}, {d['high']:+.2f}] | {resolved} |")
    return f"A = {run_a}, B = {run_b}; paired bootstrap over test images, {n} resamples\n\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS))
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(paired_table(args.run_a, args.run_b, args.metrics, args.n, args.seed))


if __name__ == "__main__":
    main()
