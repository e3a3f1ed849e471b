import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlr.objectives import create_objective


def _hand_triplet(v, t, ids, margin, hardest):
    S = (v.double() @ t.double().T).numpy()
    n = len(ids)
    i2t, t2i = [], []
    for i in range(n):
        costs = [max(0.0, margin + S[i, j] - S[i, i]) for j in range(n) if ids[j] != ids[i]]
        i2t.append((max(costs) if hardest else sum(costs)) if costs else 0.0)
    for j in range(n):
        costs = [max(0.0, margin + S[i, j] - S[j, j]) for i in range(n) if ids[i] != ids[j]]
        t2i.append((max(costs) if hardest else sum(costs)) if costs else 0.0)
    return np.mean(i2t), np.mean(t2i)


@pytest.mark.parametrize("hardest", [True, False])
def test_matches_hand_computation(hardest):
    g = torch.Generator().manual_seed(1)
    v = F.normalize(torch.randn(6, 5, generator=g), dim=-1)
    t = F.normalize(v + 0.8 * torch.randn(6, 5, generator=g), dim=-1)
    ids = torch.tensor([0, 1, 1, 2, 3, 0])
    terms = create_objective("triplet", margin=0.2, max_violation=hardest)(v, t, ids)
    want = _hand_triplet(v, t, ids.tolist(), 0.2, hardest)
    assert terms["triplet_i2t"].item() == pytest.approx(want[0], rel=1e-5)
    assert terms["triplet_t2i"].item() == pytest.approx(want[1], rel=1e-5)


def test_sum_reduction_and_bad_option():
    v = F.normalize(torch.randn(4, 3), dim=-1)
    ids = torch.arange(4)
    mean = create_objective("triplet")(v, v.flip(0), ids)
    total = create_objective("triplet", reduction="sum")(v, v.flip(0), ids)
    assert total["triplet_i2t"].item() == pytest.approx(4 * mean["triplet_i2t"].item(), rel=1e-6)
    with pytest.raises(ValueError, match="objective.reduction must be 'mean' or 'sum', got 'avg'"):
        create_objective("triplet", reduction="avg")


def test_sum_warmup_then_hardest_negatives():
    g = torch.Generator().manual_seed(4)
    v = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    t = torch.nn.functional.normalize(torch.randn(6, 5, generator=g), dim=-1)
    ids = torch.arange(6)
    obj = create_objective("triplet", max_violation=True, sum_warmup_epochs=1)
    summed = create_objective("triplet", max_violation=False)(v, t, ids)
    hardest = create_objective("triplet", max_violation=True)(v, t, ids)
    obj.set_epoch(0, None)
    assert obj(v, t, ids)["triplet_i2t"] == summed["triplet_i2t"] != hardest["triplet_i2t"]
    obj.set_epoch(1, None)
    assert obj(v, t, ids)["triplet_t2i"] == hardest["triplet_t2i"]
