"""Scene relevance: the synthetic data's ground truth, from the objects the generator drew.

A scene is a list of objects, each a dict of attributes (``shape``, ``colour``, ``size``,
``position`` for vlr's generator; any attributes work). Between scenes a and b::

    sim(o, p)  = |{attributes k : o[k] == p[k]}| / |attributes|            (one object pair)
    S(a, b)    = max over one-to-one matchings M of a's and b's objects of
                 sum_{(o, p) in M} sim(o, p) / max(|a|, |b|)

i.e. the best one-to-one matching of objects (Hungarian-style, exhaustively: scenes hold at
most a handful of objects), each matched pair scoring the share of attributes they share,
normalised by the larger object count, so unmatched objects count as 0. S is symmetric and
in [0, 1]; S = 1 only when the scenes hold the same objects (as multisets of attribute
tuples). Two empty scenes score 0: there is nothing to share.

Why the truth and not ROUGE-L: captions (and an n-gram reference built from them) are only a
view of the scene; under text imbalance they say less than the image shows, so a measure
built from caption words rewards copying the words. The scene is what both modalities depict.

Vectorised: attributes are coded as integers, the per-pair object similarities of a chunk
of query scenes against every scene are one broadcast, and the matching is a max over the
K! permutations of K padded object slots (K = the most objects in any scene; 24 for vlr's
up-to-4-object scenes), so a 250-image split takes milliseconds.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch

_CHUNK_ELEMENTS = 1 << 24


def _codes(scenes: Sequence[Sequence[dict]]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """[n, K, A] attribute codes (-1: padded slot), [n] object counts, A."""
    keys = sorted({k for scene in scenes for obj in scene for k in obj})
    if not keys:
        raise ValueError("scene relevance: no scene has an object with attributes")
    vocab: dict[tuple[str, object], int] = {}
    most = max((len(s) for s in scenes), default=0)
    codes = torch.full((len(scenes), max(most, 1), len(keys)), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for j, obj in enumerate(scene):
            for a, key in enumerate(keys):
                value = obj.get(key)
                codes[i, j, a] = vocab.setdefault((key, value), len(vocab)) if value is not None else -2 - a
    counts = torch.tensor([len(s) for s in scenes], dtype=torch.long)
    return codes, counts, len(keys)


def scene_relevance(scenes: Sequence[Sequence[dict]]) -> torch.Tensor:
    """[n, n] float32 scene relevance S (formula in the module docstring) of every pair of scenes."""
    n = len(scenes)
    if n == 0:
        return torch.zeros(0, 0)
    codes, counts, num_attrs = _codes(scenes)
    k = codes.shape[1]
    valid = codes[:, :, 0] != -1  # [n, K] real object slots
    perms = torch.tensor(list(itertools.permutations(range(k))), dtype=torch.long)  # [P, K]
    denom = torch.maximum(counts[:, None], counts[None, :]).clamp_min(1).float()
    out = torch.empty(n, n, dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, n * k * k * max(num_attrs, perms.shape[0])))
    for start in range(0, n, step):
        q = slice(start, min(start + step, n))
        # [q, n, K, K]: share of attributes object slot s of the query shares with slot t of the other
        same = (codes[q][:, None, :, None, :] == codes[None, :, None, :, :]).float().mean(-1)
        same = same * (valid[q][:, None, :, None] & valid[None, :, None, :])
        # best total over one-to-one assignments of the query's K slots to the other's K slots
        picked = same[:, :, torch.arange(k)[None, :], perms]  # [q, n, P, K]
        out[q] = picked.sum(-1).amax(-1) / denom[q]
    return out
