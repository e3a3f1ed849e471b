import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from vlr.objectives import create_objective


class TinyEncoder(nn.Module):
    """DualEncoder-shaped: forward(images, input_ids, attention_mask) -> (v, t), normalised."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image_tower, self.image_proj = nn.Linear(6, 5), nn.Linear(5, 4)
        self.text_tower, self.text_proj = nn.Linear(7, 5), nn.Linear(5, 4)
        self.double()

    def forward(self, images, input_ids, attention_mask):
        v = F.normalize(self.image_proj(torch.tanh(self.image_tower(images))), dim=-1)
        t = F.normalize(self.text_proj(torch.tanh(self.text_tower(input_ids))), dim=-1)
        return v, t


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 6, generator=g, dtype=torch.float64)
    texts = torch.randn(6, 7, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 2, 3, 3])
    teacher = {"image": torch.randn(6, 3, generator=g, dtype=torch.float64),
               "text": torch.randn(6, 8, generator=g, dtype=torch.float64)}
    return images, texts, ids, teacher


def _objective(**kw):
    obj = create_objective("covlr", alpha=0.5, beta=2.0, temperature=0.2, learnable_temperature=False, **kw)
    return obj.double()


def _total_grads(obj, enc, batch):
    images, texts, ids, teacher = batch
    enc.zero_grad()
    terms = obj.meta_terms(enc, images, texts, None, ids, teacher)
    sum(terms.values()).backward()
    return {n: p.grad.clone() for n, p in enc.named_parameters()}


def _meta_objective(obj, enc, params, batch):
    """f(theta) = L_c(theta) + beta * L_r(theta - alpha * grad L_c(theta)), written out directly."""
    images, texts, ids, teacher = batch
    v, t = functional_call(enc, params, (images, texts, None))
    l_c = sum(obj.consistency(v, t, ids).values())
    grads = torch.autograd.grad(l_c, list(params.values()), create_graph=True)
    fast = {n: p - obj.alpha * g for (n, p), g in zip(params.items(), grads)}
    vf, tf = functional_call(enc, fast, (images, texts, None))
    return l_c + obj.beta * obj.preservation(vf, tf, teacher)


@pytest.mark.parametrize("relation", ["row_kl", "distance_kl", "mae"])
def test_first_order_matches_closed_form(relation):
    enc, batch = TinyEncoder(), _batch()
    obj = _objective(relation=relation)
    got = _total_grads(obj, enc, batch)
    images, texts, ids, teacher = batch
    params = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    v, t = functional_call(enc, params, (images, texts, None))
    g_c = torch.autograd.grad(sum(obj.consistency(v, t, ids).values()), list(params.values()))
    fast = {n: (p - obj.alpha * g).detach().requires_grad_(True) for (n, p), g in zip(params.items(), g_c)}
    vf, tf = functional_call(enc, fast, (images, texts, None))
    g_r = torch.autograd.grad(obj.preservation(vf, tf, teacher), list(fast.values()))
    for (name, _), gc, gr in zip(params.items(), g_c, g_r):
        assert torch.allclose(got[name], gc + obj.beta * gr, atol=1e-10), name


def test_second_order_matches_finite_differences():
    enc, batch = TinyEncoder(), _batch()
    obj = _objective(second_order=True)
    got = _total_grads(obj, enc, batch)
    base = {n: p.detach().clone() for n, p in enc.named_parameters()}
    eps = 1e-6
    checked = 0
    for name in ("image_tower.weight", "text_proj.weight", "image_proj.bias"):
        for flat in (0, 3):
            plus = {n: p.clone().requires_grad_(True) for n, p in base.items()}
            minus = {n: p.clone().requires_grad_(True) for n, p in base.items()}
            with torch.no_grad():
                plus[name].view(-1)[flat] += eps
                minus[name].view(-1)[flat] -= eps
            numeric = (_meta_objective(obj, enc, plus, batch) - _meta_objective(obj, enc, minus, batch)) / (2 * eps)
            assert got[name].view(-1)[flat].item() == pytest.approx(numeric.item(), rel=1e-5, abs=1e-8), (name, flat)
            checked += 1
    assert checked == 6
    # and the second-order term matters here: first order gives a different gradient
    first = _total_grads(_objective(second_order=False), enc, batch)
    assert not torch.allclose(first["image_tower.weight"], got["image_tower.weight"], atol=1e-6)


def test_projections_only_virtual_step_leaves_towers_out_of_the_step():
    enc, batch = TinyEncoder(), _batch()
    obj = _objective(virtual_params="projections")
    images, texts, ids, teacher = batch
    terms = obj.meta_terms(enc, images, texts, None, ids, teacher)
    # relation term evaluated at theta' where only the projections moved
    params = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    v, t = functional_call(enc, params, (images, texts, None))
    names = ["image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias"]
    g = torch.autograd.grad(sum(obj.consistency(v, t, ids).values()), [params[n] for n in names])
    fast = {**params, **{n: params[n] - obj.alpha * gi for n, gi in zip(names, g)}}
    vf, tf = functional_call(enc, fast, (images, texts, None))
    assert terms["relation"].item() == pytest.approx(obj.beta * obj.preservation(vf, tf, teacher).item(), rel=1e-10)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="objective.virtual_params must be one of"):
        create_objective("covlr", virtual_params="heads")
    with pytest.raises(ValueError, match="objective.relation must be one of"):
        create_objective("covlr", relation="cosine")


def test_first_order_carrier_gives_the_temperature_its_consistency_gradient():
    enc, (images, texts, ids, teacher) = TinyEncoder(), _batch()
    obj = create_objective("covlr", alpha=0.5, beta=2.0, temperature=0.2, learnable_temperature=True).double()
    terms = obj.meta_terms(enc, images, texts, None, ids, teacher)
    assert terms["itc_grad"].item() == 0.0  # carries gradient only
    sum(terms.values()).backward()
    got = obj.temperature.log_value.grad.clone()
    obj.zero_grad()
    v, t = enc(images, texts, None)
    sum(obj.consistency(v, t, ids).values()).backward()  # L_r(theta') does not involve the temperature
    assert torch.allclose(got, obj.temperature.log_value.grad, atol=1e-12)
