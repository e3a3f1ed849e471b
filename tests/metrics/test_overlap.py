import numpy as np
import pytest
import torch

from vlr.metrics import neighbourhood_overlap


def _brute(a, b, k):
    a, b = a.numpy(), b.numpy()
    out = []
    for i in range(len(a)):
        sa, sb = a @ a[i], b @ b[i]
        sa[i] = sb[i] = -np.inf
        na, nb = set(np.argsort(-sa)[:k]), set(np.argsort(-sb)[:k])
        out.append(len(na & nb) / k)
    return float(np.mean(out))


@pytest.mark.parametrize("k", [1, 3, 10])
def test_matches_brute_force(k):
    g = torch.Generator().manual_seed(k)
    ref = torch.randn(60, 8, generator=g, dtype=torch.float64)
    emb = ref + 0.7 * torch.randn(60, 8, generator=g, dtype=torch.float64)
    assert neighbourhood_overlap(emb, ref, k) == pytest.approx(_brute(emb, ref, k))


def test_identical_is_one_and_errors():
    x = torch.randn(20, 4)
    assert neighbourhood_overlap(x, x.clone(), 5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        neighbourhood_overlap(x, x[:5], 3)
