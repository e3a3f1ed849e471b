"""Evaluation at COCO-5K scale: vlr's chunked metrics vs a VSE-style evaluation.

VSE-style = what VSE++/VSE-infinity's ``i2t``/``t2i`` do: the full score matrix, then
one ``argsort`` per query in a Python loop; it computes the cross-modal part only.
Each variant runs in its own subprocess so its peak memory is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from experiments.bench.memory import measure

N_IMG, CAPS, DIM = 5000, 5, 256


def _embeddings():
    g = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(N_IMG, DIM, generator=g), dim=-1)
    t2i = torch.arange(N_IMG).repeat_interleave(CAPS)
    txt = torch.nn.functional.normalize(img[t2i] + 0.8 * torch.randn(N_IMG * CAPS, DIM, generator=g), dim=-1)
    return img, txt, t2i


def vse_style(img: np.ndarray, txt: np.ndarray) -> dict[str, float]:
    """VSE-infinity's evaluation loop (5 captions per image, consecutive)."""
    sims = img @ txt.T
    ranks = np.zeros(N_IMG)
    for index in range(N_IMG):
        inds = np.argsort(sims[index])[::-1]
        rank = 1e20
        for i in range(CAPS * index, CAPS * index + CAPS):
            rank = min(rank, np.where(inds == i)[0][0])
        ranks[index] = rank
    r_i2t = [100.0 * len(np.where(ranks < k)[0]) / len(ranks) for k in (1, 5, 10)]
    ranks_t = np.zeros(CAPS * N_IMG)
    for index in range(N_IMG):
        for i in range(CAPS):
            inds = np.argsort(sims.T[CAPS * index + i])[::-1]
            ranks_t[CAPS * index + i] = np.where(inds == index)[0][0]
    r_t2i = [100.0 * len(np.where(ranks_t < k)[0]) / len(ranks_t) for k in (1, 5, 10)]
    return {"rsum": sum(r_i2t) + sum(r_t2i)}


def strict_count(img: torch.Tensor, txt: torch.Tensor, t2i: torch.Tensor) -> dict[str, float]:
    """The previous chunked pass (ties counted for the query: strictly higher scores only), for
    i2t, t2i and t2t as vlr computes them: the baseline for the cost of tie handling."""
    from vlr.metrics.ranking import _chunks, padded_groups

    def ranks(queries, gallery, cand, self_index=None):
        out = torch.empty(queries.shape[0], dtype=torch.long)
        for idx in _chunks(queries.shape[0], gallery.shape[0]):
            scores = queries[idx] @ gallery.T
            if self_index is not None:
                scores[torch.arange(idx.numel()), self_index[idx]] = -float("inf")
            c = cand[idx]
            ok = c >= 0
            if self_index is not None:
                ok &= c != self_index[idx][:, None]
            best = scores.gather(1, c.clamp_min(0)).masked_fill(~ok, -float("inf")).amax(dim=1)
            out[idx] = (scores > best[:, None]).sum(dim=1, dtype=torch.int32).long()
        return out

    caps = padded_groups(t2i, img.shape[0])
    r_i2t, r_t2i = ranks(img, txt, caps), ranks(txt, img, t2i[:, None])
    ranks(txt, txt, caps[t2i], torch.arange(txt.shape[0]))
    return {"rsum": float(sum(100.0 * (r < k).double().mean() for r in (r_i2t, r_t2i) for k in (1, 5, 10)))}


def _worker(which: str) -> dict:
    img, txt, t2i = _embeddings()
    if which == "strict_count":
        with measure() as m:
            out = strict_count(img, txt, t2i)
    elif which == "vse_style":
        a, b = img.numpy(), txt.numpy()
        with measure() as m:
            out = vse_style(a, b)
    else:
        from vlr.metrics import retrieval_metrics

        with measure() as m:
            out = retrieval_metrics(img, txt, t2i)
    return {**m, "rsum": out["rsum"]}


def _rouge_build() -> dict | None:
    path = Path(__file__).resolve().parents[2].parent / "shared/data/karpathy-test-captions/coco_test.json"
    if not path.exists():
        return None
    from vlr.metrics import rouge_l_relevance

    items = json.loads(path.read_text())
    caps = [c for it in items for c in it["caption"]]
    t2i = [i for i, it in enumerate(items) for _ in it["caption"]]
    start = time.perf_counter()
    rouge_l_relevance(caps, t2i, use_cache=False, progress=False)
    return {"seconds": time.perf_counter() - start, "captions": len(caps), "images": len(items)}


def run() -> dict:
    results = {}
    for which in ("vlr", "strict_count", "vse_style"):
        proc = subprocess.run(
            [sys.executable, "-m", "experiments.bench.eval_bench", which], capture_output=True, text=True, check=True
        )
        results[which] = json.loads(proc.stdout.strip().splitlines()[-1])
    if max(abs(results[w]["rsum"] - results["vse_style"]["rsum"]) for w in ("vlr", "strict_count")) > 1e-6:
        raise AssertionError(f"vlr and VSE-style rsum differ: {results}")
    rouge = _rouge_build()
    figures = {
        "eval_vlr_seconds": results["vlr"]["seconds"],
        "eval_vlr_peak_added_gib": results["vlr"]["peak_added_gib"],
        "eval_strict_count_seconds": results["strict_count"]["seconds"],
        "eval_vse_style_seconds": results["vse_style"]["seconds"],
        "eval_vse_style_peak_added_gib": results["vse_style"]["peak_added_gib"],
        "eval_rsum_check": results["vlr"]["rsum"],
    }
    if rouge:
        figures["rouge_l_coco5k_seconds"] = rouge["seconds"]
        figures["rouge_l_coco5k_shape"] = f"{rouge['captions']}x{rouge['images']}"
    return {
        "ratios": {
            "eval_vs_vse_style": results["vlr"]["seconds"] / results["vse_style"]["seconds"],
            "ties_vs_strict_count": results["vlr"]["seconds"] / results["strict_count"]["seconds"],
        },
        "figures": figures,
        "notes": {
            "eval": f"{N_IMG} images x {N_IMG * CAPS} captions, d={DIM}; vlr computes cross-modal + t2t, "
            "VSE-style cross-modal only; peak = resident memory added (VmHWM); vlr handles ties (expected); "
            "strict_count = the previous pass over i2t, t2i, t2t that counted only strictly higher scores",
        },
    }


if __name__ == "__main__":
    torch.set_num_threads(torch.get_num_threads())
    print(json.dumps(_worker(sys.argv[1])))
