"""``objective.local_loss=true`` (issue 31): each rank's own rows against the gathered batch give
the global loss's gradients; positives by image id span the whole global batch."""

import pytest
import torch
import torch.nn.functional as F

import vlr.objectives.infonce as infonce
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


# -- the objectives that reuse the contrastive term: relation_kd, covlr, sad -----------------------
REF_D = 6
OTHERS = {
    "relation_kd": dict(temperature=0.1),
    "covlr": dict(temperature=0.1, alpha=0.01),
    "sad": dict(temperature=0.1, embed_dim=D, image_reference_dim=REF_D, text_reference_dim=REF_D, stage1_epochs=0),
}


def _module_of(name: str):
    import vlr.objectives.covlr as covlr
    import vlr.objectives.sad as sad

    return sad if name == "sad" else covlr


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_simulated_ranks_give_the_global_loss_and_its_gradients_for(name, monkeypatch):
    """As for infonce: W simulated ranks, each with its own rows of the contrastive terms and the
    whole-batch relation terms, averaged as DDP averages gradients, give the global loss's value
    and gradients (features and every learnable parameter of the objective)."""
    leaves = _features()
    v = F.normalize(torch.cat(leaves[:WORLD]), dim=-1)
    t = F.normalize(torch.cat(leaves[WORLD:]), dim=-1)
    g = torch.Generator().manual_seed(5)
    reference = {side: F.normalize(torch.randn(len(IDS), REF_D, generator=g), dim=-1) for side in ("image", "text")}
    global_obj = create_objective(name, **OTHERS[name])
    want = sum(global_obj(v, t, IDS, reference=reference).values())
    want_grads = _grads(want, [*leaves, *(p for p in global_obj.parameters() if p.requires_grad)])

    local_obj = create_objective(name, **OTHERS[name], local_loss=True)
    local_obj.load_state_dict(global_obj.state_dict())
    module = _module_of(name)
    per_rank = []
    for r in range(WORLD):
        rows = slice(r * ROWS, (r + 1) * ROWS)
        mine = {"v": v[rows], "t": t[rows], "ids": IDS[rows], **{s: x[rows] for s, x in reference.items()}}
        whole = {id(mine["v"]): v, id(mine["t"]): t, id(mine["ids"]): IDS}
        whole |= {id(mine[s]): reference[s] for s in reference}
        monkeypatch.setattr(module, "gather_with_grad", lambda x, whole=whole: whole[id(x)])
        monkeypatch.setattr(module, "gather_no_grad", lambda x, whole=whole: whole[id(x)])
        monkeypatch.setattr(module, "local_rows", lambda n, r=r: slice(r * n, (r + 1) * n))
        terms = local_obj(mine["v"], mine["t"], mine["ids"], reference={s: mine[s] for s in reference})
        per_rank.append(sum(terms.values()))
    got = torch.stack(per_rank).mean()
    got_grads = _grads(got, [*leaves, *(p for p in local_obj.parameters() if p.requires_grad)])
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert len({round(x.item(), 4) for x in per_rank}) == WORLD  # each rank's share differs
    assert len(got_grads) > len(leaves)  # the temperature (and sad's heads and lambda) are compared too
    for g_want, g_got in zip(want_grads, got_grads, strict=True):
        assert torch.allclose(g_got, g_want, atol=1e-6)


def test_covlr_virtual_step_gradient_is_the_global_one_with_local_loss(monkeypatch):
    """The meta step's inner gradient is grad L_c averaged over ranks (`average_gradients`): with
    local rows, the mean of the ranks' gradients of their consistency terms is the global one."""
    import vlr.objectives.covlr as covlr

    leaves = _features()
    v = F.normalize(torch.cat(leaves[:WORLD]), dim=-1)
    t = F.normalize(torch.cat(leaves[WORLD:]), dim=-1)
    obj = create_objective("covlr", temperature=0.1)
    want = _grads(sum(obj.consistency(v, t, IDS).values()), leaves)
    local = create_objective("covlr", temperature=0.1, local_loss=True)
    total = [torch.zeros_like(x) for x in leaves]
    for r in range(WORLD):
        rows = slice(r * ROWS, (r + 1) * ROWS)
        mine = (v[rows], t[rows], IDS[rows])
        whole = {id(mine[0]): v, id(mine[1]): t, id(mine[2]): IDS}
        monkeypatch.setattr(covlr, "gather_with_grad", lambda x, whole=whole: whole[id(x)])
        monkeypatch.setattr(covlr, "gather_no_grad", lambda x, whole=whole: whole[id(x)])
        monkeypatch.setattr(covlr, "local_rows", lambda n, r=r: slice(r * n, (r + 1) * n))
        grads = _grads(sum(local.consistency(*mine).values()), leaves)
        total = [a + b / WORLD for a, b in zip(total, grads, strict=True)]
    for g_want, g_got in zip(want, total, strict=True):
        assert torch.allclose(g_got, g_want, atol=1e-6)


def test_an_objective_without_a_contrastive_term_refuses_local_loss():
    from vlr.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^objective.local_loss=true: objective=triplet has no contrastive term"):
        create_objective("triplet", local_loss=True)
