"""The shared gather: a global-batch loss on 2 ranks x B/2 gives the 1-rank x B gradients."""

import json

import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from tests.distributed import run_distributed
from vlr.objectives import create_objective

B, D_IN, D = 8, 6, 4
CASES = {"infonce": {"temperature": 0.1}, "triplet": {"max_violation": True}}


class _Model(nn.Module):
    def __init__(self, name):
        super().__init__()
        torch.manual_seed(0)
        self.img, self.txt = nn.Linear(D_IN, D), nn.Linear(D_IN, D)
        self.objective = create_objective(name, **CASES[name])

    def forward(self, x_img, x_txt, ids):
        v = nn.functional.normalize(self.img(x_img), dim=-1)
        t = nn.functional.normalize(self.txt(x_txt), dim=-1)
        return torch.stack(list(self.objective(v, t, ids).values())).sum()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4])  # duplicates straddle the rank boundary
    return torch.randn(B, D_IN, generator=g), torch.randn(B, D_IN, generator=g), ids


def _grads(model):
    return {n: p.grad.tolist() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, name, out):
    x_img, x_txt, ids = _batch()
    model = DistributedDataParallel(_Model(name))
    sl = slice(rank * B // world, (rank + 1) * B // world)
    model(x_img[sl], x_txt[sl], ids[sl]).backward()
    with open(f"{out}.{rank}", "w") as fh:
        json.dump(_grads(model.module), fh)
    del model  # before the process group is destroyed (tests.distributed)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_match_one(tmp_path, name):
    run_distributed(_worker, 2, name, str(tmp_path / "g"))
    model = _Model(name)
    model(*_batch()).backward()
    want = _grads(model)
    for rank in range(2):
        got = json.loads((tmp_path / f"g.{rank}").read_text())
        assert set(got) == set(want)
        for key in want:
            assert torch.allclose(torch.tensor(got[key]), torch.tensor(want[key]), atol=1e-6), key
