"""``objective.local_loss=true`` (issue 31): each rank's own rows against the gathered batch give
the global loss's gradients; positives by image id span the whole global batch."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import vlr.objectives.infonce as infonce
from tests.distributed import run_distributed
from vlr.objectives import create_objective

WORLD, ROWS, D = 4, 3, 5
# image 1 on ranks 0 and 1, image 5 on ranks 2 and 3, image 7 twice on rank 3
IDS = torch.tensor([0, 1, 2, 1, 3, 4, 5, 6, 5, 7, 7, 8])


def _features():
    g = torch.Generator().manual_seed(4)
    return [torch.randn(ROWS, D, generator=g, requires_grad=True) for _ in range(2 * WORLD)]


def _grads(loss, leaves):
    return torch.autograd.grad(loss, leaves, retain_graph=True)


def test_simulated_ranks_give_the_global_loss_and_its_gradients(monkeypatch):
    """W ranks in one process: rank r's local loss over the concatenated (autograd-carrying)
    batch, averaged over ranks as DDP averages gradients, equals the global loss, value and
    gradient, for every rank's features and the learnable temperature."""
    leaves = _features()
    v = F.normalize(torch.cat(leaves[:WORLD]), dim=-1)
    t = F.normalize(torch.cat(leaves[WORLD:]), dim=-1)
    global_obj = create_objective("infonce", temperature=0.1)
    want = sum(global_obj(v, t, IDS).values())
    want_grads = _grads(want, [*leaves, next(global_obj.parameters())])  # the features and the temperature

    local_obj = create_objective("infonce", temperature=0.1, local_loss=True)
    per_rank = []
    for r in range(WORLD):
        rows = slice(r * ROWS, (r + 1) * ROWS)
        gathered = iter([v, t])  # the objective gathers its images, then its captions
        monkeypatch.setattr(infonce, "gather_with_grad", lambda x, gathered=gathered: next(gathered))
        monkeypatch.setattr(infonce, "gather_no_grad", lambda x: IDS)
        monkeypatch.setattr(infonce, "local_rows", lambda n, r=r: slice(r * n, (r + 1) * n))
        per_rank.append(sum(local_obj(v[rows], t[rows], IDS[rows]).values()))
    got = torch.stack(per_rank).mean()
    got_grads = _grads(got, [*leaves, next(local_obj.parameters())])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert len({round(x.item(), 4) for x in per_rank}) == WORLD  # each rank's share differs
    for g_want, g_got in zip(want_grads, got_grads, strict=True):
        assert torch.allclose(g_got, g_want, atol=1e-6)


def test_local_rows_use_positives_from_other_ranks():
    """Rank 1's first row shows image 1, whose other caption sits on rank 0: swapping the two
    captions leaves rank 1's local i2t term unchanged only because it is a positive."""
    g = torch.Generator().manual_seed(0)
    v, t = (F.normalize(torch.randn(len(IDS), D, generator=g), dim=-1) for _ in range(2))
    swapped = t.clone()
    swapped[[1, 3]] = t[[3, 1]]
    tau = torch.tensor(0.1)
    rows = slice(ROWS, 2 * ROWS)
    same = [infonce.contrastive_terms(v, x, IDS, tau, rows)["itc_i2t"] for x in (t, swapped)]
    assert same[0].item() == pytest.approx(same[1].item(), rel=1e-6)
    distinct = [infonce.contrastive_terms(v, x, torch.arange(len(IDS)), tau, rows)["itc_i2t"] for x in (t, swapped)]
    assert abs(distinct[0].item() - distinct[1].item()) > 1e-3


def test_one_process_local_loss_is_the_global_loss():
    g = torch.Generator().manual_seed(1)
    v, t = (F.normalize(torch.randn(len(IDS), D, generator=g), dim=-1) for _ in range(2))
    a = create_objective("infonce", temperature=0.1)(v, t, IDS)
    b = create_objective("infonce", temperature=0.1, local_loss=True)(v, t, IDS)
    assert {k: x.item() for k, x in a.items()} == pytest.approx({k: x.item() for k, x in b.items()}, rel=1e-7)


# -- a real 2-process run ------------------------------------------------------------------------
class _Model(nn.Module):
    def __init__(self, local_loss: bool):
        super().__init__()
        torch.manual_seed(0)
        self.img, self.txt = nn.Linear(D, D), nn.Linear(D, D)
        self.objective = create_objective("infonce", temperature=0.1, local_loss=local_loss)

    def forward(self, x_img, x_txt, ids):
        v, t = F.normalize(self.img(x_img), dim=-1), F.normalize(self.txt(x_txt), dim=-1)
        return torch.stack(list(self.objective(v, t, ids).values())).sum()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, D, generator=g), torch.randn(8, D, generator=g), torch.tensor([0, 1, 1, 2, 3, 3, 3, 4])


def _worker(rank, world, out):
    x_img, x_txt, ids = _batch()
    model = DistributedDataParallel(_Model(local_loss=True))
    sl = slice(rank * 4, (rank + 1) * 4)
    model(x_img[sl], x_txt[sl], ids[sl]).backward()
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({n: p.grad.tolist() for n, p in model.module.named_parameters()}, fh)
    del model


@pytest.mark.slow
def test_two_ranks_with_local_loss_match_one_global_process(tmp_path):
    run_distributed(_worker, 2, str(tmp_path / "g"))
    model = _Model(local_loss=False)
    model(*_batch()).backward()
    for rank in range(2):
        got = json.loads((tmp_path / f"g.{rank}").read_text())
        for name, p in model.named_parameters():
            assert torch.allclose(torch.tensor(got[name]), p.grad, atol=1e-6), (rank, name)
