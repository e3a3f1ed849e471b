import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from tests.conftest import tiny_bert
from vlr.objectives import create_objective


class TinyEncoder(nn.Module):
    """DualEncoder-shaped: forward(images, input_ids, attention_mask) -> (v, t), normalised."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image_tower, self.image_proj = nn.Linear(6, 5), nn.Linear(5, 4)
        self.text_tower, self.text_proj = nn.Linear(7, 5), nn.Linear(5, 4)
        self.double()

    def tower_features(self, images, input_ids, attention_mask):
        return torch.tanh(self.image_tower(images)), torch.tanh(self.text_tower(input_ids))

    def forward(self, images, input_ids, attention_mask):
        fi, ft = self.tower_features(images, input_ids, attention_mask)
        return F.normalize(self.image_proj(fi), dim=-1), F.normalize(self.text_proj(ft), dim=-1)


def _batch():
    g = torch.Generator().manual_seed(1)
    images = torch.randn(6, 6, generator=g, dtype=torch.float64)
    texts = torch.randn(6, 7, generator=g, dtype=torch.float64)
    ids = torch.tensor([0, 0, 1, 2, 3, 3])
    ref_rows = {
        "image": torch.randn(6, 3, generator=g, dtype=torch.float64),
        "text": torch.randn(6, 8, generator=g, dtype=torch.float64),
    }
    return images, texts, ids, ref_rows


def _objective(**kw):
    obj = create_objective("covlr", alpha=0.5, beta=2.0, temperature=0.2, learnable_temperature=False, **kw)
    return obj.double()


def _total_grads(obj, enc, batch):
    images, texts, ids, ref_rows = batch
    enc.zero_grad()
    terms = obj.meta_terms(enc, images, texts, None, ids, ref_rows)
    sum(terms.values()).backward()
    return {n: p.grad.clone() for n, p in enc.named_parameters()}


def _meta_objective(obj, enc, params, batch):
    """f(theta) = L_c(theta) + beta * L_r(theta - alpha * grad L_c(theta)), written out directly."""
    images, texts, ids, ref_rows = batch
    v, t = functional_call(enc, params, (images, texts, None))
    l_c = sum(obj.consistency(v, t, ids).values())
    grads = torch.autograd.grad(l_c, list(params.values()), create_graph=True)
    fast = {n: p - obj.alpha * g for (n, p), g in zip(params.items(), grads, strict=False)}
    vf, tf = functional_call(enc, fast, (images, texts, None))
    return l_c + obj.beta * obj.preservation(vf, tf, ref_rows)


@pytest.mark.parametrize("relation", ["row_kl", "distance_kl", "similarity_mae"])
def test_first_order_matches_closed_form(relation):
    enc, batch = TinyEncoder(), _batch()
    obj = _objective(relation=relation)
    got = _total_grads(obj, enc, batch)
    images, texts, ids, ref_rows = batch
    params = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    v, t = functional_call(enc, params, (images, texts, None))
    g_c = torch.autograd.grad(sum(obj.consistency(v, t, ids).values()), list(params.values()))
    fast = {
        n: (p - obj.alpha * g).detach().requires_grad_(True) for (n, p), g in zip(params.items(), g_c, strict=False)
    }
    vf, tf = functional_call(enc, fast, (images, texts, None))
    g_r = torch.autograd.grad(obj.preservation(vf, tf, ref_rows), list(fast.values()))
    for (name, _), gc, gr in zip(params.items(), g_c, g_r, strict=False):
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
    images, texts, ids, ref_rows = batch
    terms = obj.meta_terms(enc, images, texts, None, ids, ref_rows)
    # relation term evaluated at theta' where only the projections moved
    params = {n: p.detach().clone().requires_grad_(True) for n, p in enc.named_parameters()}
    v, t = functional_call(enc, params, (images, texts, None))
    names = ["image_proj.weight", "image_proj.bias", "text_proj.weight", "text_proj.bias"]
    g = torch.autograd.grad(sum(obj.consistency(v, t, ids).values()), [params[n] for n in names], retain_graph=True)
    fast = {**params, **{n: params[n] - obj.alpha * gi for n, gi in zip(names, g, strict=False)}}
    vf, tf = functional_call(enc, fast, (images, texts, None))
    assert terms["relation"].item() == pytest.approx(obj.beta * obj.preservation(vf, tf, ref_rows).item(), rel=1e-10)
    # the reused tower outputs carry the relation loss's gradient to the towers (first order)
    expected = torch.autograd.grad(obj.beta * obj.preservation(vf, tf, ref_rows), [params["image_tower.weight"]])[0]
    sum(terms.values()).backward()
    g_c = torch.autograd.grad(sum(obj.consistency(v, t, ids).values()), [params["image_tower.weight"]])[0]
    assert torch.allclose(enc.image_tower.weight.grad, expected + g_c, atol=1e-10)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="objective.virtual_params must be one of"):
        create_objective("covlr", virtual_params="heads")
    with pytest.raises(ValueError, match="objective.relation must be one of"):
        create_objective("covlr", relation="cosine")
    with pytest.raises(ValueError, match="objective.relation=mae is now called similarity_mae"):
        create_objective("covlr", relation="mae")


def test_first_order_carrier_gives_the_temperature_its_consistency_gradient():
    enc, (images, texts, ids, ref_rows) = TinyEncoder(), _batch()
    obj = create_objective("covlr", alpha=0.5, beta=2.0, temperature=0.2, learnable_temperature=True).double()
    terms = obj.meta_terms(enc, images, texts, None, ids, ref_rows)
    assert terms["itc_grad"].item() == 0.0  # carries gradient only
    sum(terms.values()).backward()
    got = obj.temperature.log_value.grad.clone()
    obj.zero_grad()
    v, t = enc(images, texts, None)
    sum(obj.consistency(v, t, ids).values()).backward()  # L_r(theta') does not involve the temperature
    assert torch.allclose(got, obj.temperature.log_value.grad, atol=1e-12)


def test_relation_kd_is_covlr_without_the_virtual_step():
    enc, (images, texts, ids, ref_rows) = TinyEncoder(), _batch()
    kd = create_objective("relation_kd", beta=2.0, temperature=0.2, learnable_temperature=False).double()
    v, t = enc(images, texts, None)
    terms = kd(v, t, ids, ref_rows)
    assert set(terms) == {"itc_i2t", "itc_t2i", "relation"}
    assert terms["relation"].item() == pytest.approx(2.0 * kd.preservation(v, t, ref_rows).item(), rel=1e-12)
    grads_kd = torch.autograd.grad(sum(terms.values()), list(enc.parameters()))
    covlr = _objective(second_order=False)
    covlr.alpha = 0.0  # the meta step's path at alpha = 0 moves nothing: the same gradient
    meta = covlr.meta_terms(enc, images, texts, None, ids, ref_rows)
    grads_meta = torch.autograd.grad(sum(meta.values()), list(enc.parameters()))
    for a, b in zip(grads_kd, grads_meta, strict=False):
        assert torch.allclose(a, b, atol=1e-12)
    with pytest.raises(ValueError, match="objective.alpha has no meaning for relation_kd"):
        create_objective("relation_kd", alpha=0.1)


def test_options_that_cannot_act_are_refused():
    from vlr.errors import ConfigError

    enc, (images, texts, ids, ref_rows) = TinyEncoder(), _batch()
    enc.image_proj, enc.text_proj = nn.Identity(), nn.Identity()  # model.embed_dim=null
    enc.image_tower, enc.text_tower = nn.Linear(6, 4).double(), nn.Linear(7, 4).double()
    with pytest.raises(
        ConfigError, match="objective.virtual_params=projections, but the encoder has no trainable projections"
    ):
        _objective(virtual_params="projections").meta_terms(enc, images, texts, None, ids, ref_rows)
    enc.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable encoder parameter takes the virtual step"):
        _objective(second_order=True).meta_terms(enc, images, texts, None, ids, ref_rows)
    for option, kwargs in (
        ("second_order=true", {"second_order": True}),
        ("virtual_params=projections", {"virtual_params": "projections"}),
    ):
        with pytest.raises(ConfigError, match=f"objective.{option} cannot act with objective.alpha=0"):
            create_objective("covlr", alpha=0.0, **kwargs)
    create_objective("covlr", alpha=0.0)  # plain alpha = 0 is relation_kd's computation, allowed


def _second_order_under_ddp(rank, world):
    from vlr.errors import ConfigError

    enc, (images, texts, ids, ref_rows) = TinyEncoder(), _batch()
    with pytest.raises(ConfigError, match="objective.second_order=true cannot run under DDP"):
        _objective(second_order=True).meta_terms(
            enc, images[rank::2], texts[rank::2], None, ids[rank::2], {k: x[rank::2] for k, x in ref_rows.items()}
        )


def test_second_order_is_refused_under_ddp():
    from tests.distributed import run_distributed

    run_distributed(_second_order_under_ddp, 2)


def test_second_order_runs_with_attention_towers():
    """The fused attention kernels are not twice differentiable; the meta step uses the math one."""
    from vlr.models import DualEncoder
    from vlr.towers import ImageTower, TextTower

    torch.manual_seed(0)
    enc = DualEncoder(
        ImageTower(
            "vit_tiny_patch16_224", model_kwargs=dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
        ),
        TextTower(
            config=tiny_bert(hidden=32),
            vocab_size=50,
        ),
        embed_dim=16,
    )
    images, ids = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 2])
    input_ids, mask = torch.randint(5, 50, (4, 8)), torch.ones(4, 8, dtype=torch.long)
    ref_rows = {"image": torch.randn(4, 6), "text": torch.randn(4, 5)}
    obj = create_objective("covlr", second_order=True)
    terms = obj.meta_terms(enc, images, input_ids, mask, ids, ref_rows)
    sum(terms.values()).backward()  # differentiates through the virtual step's gradient
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.parameters() if p.requires_grad)


def test_bf16_autocast_works_and_fp16_is_refused():
    from vlr.errors import ConfigError

    enc, (images, texts, ids, ref_rows) = TinyEncoder(), _batch()
    enc.float()
    images, texts = images.float(), texts.float()
    ref_rows = {k: v.float() for k, v in ref_rows.items()}
    obj = create_objective("covlr", alpha=0.5, beta=2.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = obj.meta_terms(enc, images, texts, None, ids, ref_rows)
    sum(terms.values()).backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())
    with pytest.raises(ConfigError, match="cannot take its virtual step under fp16 autocast"):
        with torch.autocast("cpu", dtype=torch.float16):
            create_objective("covlr").meta_terms(enc, images, texts, None, ids, ref_rows)


def _nt_xent_by_hand(t, p, ids, tau):
    """Plain loops: rows = the 2N captions; positives = other rows of the same image."""
    z = torch.cat([t, p]).tolist()
    owner = ids.tolist() * 2
    total = 0.0
    for i in range(len(z)):
        sims = [sum(a * b for a, b in zip(z[i], z[j], strict=False)) / tau for j in range(len(z))]
        log_z = torch.tensor([s for j, s in enumerate(sims) if j != i], dtype=torch.float64).logsumexp(0).item()
        pos = [j for j in range(len(z)) if j != i and owner[j] == owner[i]]
        total -= sum(sims[j] - log_z for j in pos) / len(pos)
    return total / len(z)


@pytest.mark.parametrize("ids", [[0, 1, 2, 3], [0, 0, 1, 2]])
def test_caption_consistency_is_nt_xent_over_captions_of_the_same_image(ids):
    g = torch.Generator().manual_seed(3)
    t = F.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=-1)
    p = F.normalize(torch.randn(4, 5, generator=g, dtype=torch.float64), dim=-1)
    obj = _objective(consistency_weight=10.0)
    got = obj.caption_consistency(t, p, torch.tensor(ids))
    assert got.item() == pytest.approx(_nt_xent_by_hand(t, p, torch.tensor(ids), 0.1), rel=1e-10)


class _TextEncoder(TinyEncoder):
    def embed_texts(self, input_ids, attention_mask):
        return F.normalize(self.text_proj(torch.tanh(self.text_tower(input_ids))), dim=-1)


class _RowsReference:
    """A reference that returns given rows (what `reference.embed` returns for the batch)."""

    def __init__(self, rows):
        self.rows = rows

    def embed(self, kind, split, batch):
        return self.rows[kind]


@pytest.mark.parametrize("name", ["covlr", "relation_kd"])
def test_consistency_term_joins_the_batch_terms_and_needs_paired_captions(name):
    from vlr.errors import ConfigError

    images, texts, ids, ref_rows = _batch()
    pairs = torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    obj = create_objective(name, consistency_weight=10.0, beta=2.0, temperature=0.2).double()
    encoder, reference = _TextEncoder(), _RowsReference(ref_rows)
    batch = {"images": images, "input_ids": texts, "attention_mask": None, "image_idx": ids}
    with pytest.raises(
        ConfigError,
        match=r"objective.consistency_weight=10.0 needs a second caption per pair: "
        r"set data.paired_captions=true",
    ):
        obj.batch_terms(encoder, batch, reference)
    batch.update(pair_input_ids=pairs, pair_attention_mask=None)
    terms = obj.batch_terms(encoder, batch, reference)
    enc = encoder
    want = 10.0 * obj.caption_consistency(enc.embed_texts(texts, None), enc.embed_texts(pairs, None), ids)
    assert terms["caption_consistency"].item() == pytest.approx(want.item(), rel=1e-12)
    sum(terms.values()).backward()  # the term trains the text side
    assert enc.text_tower.weight.grad.abs().sum() > 0
    off = create_objective(name, beta=2.0, temperature=0.2).double()
    assert "caption_consistency" not in off.batch_terms(encoder, batch, reference)


@pytest.mark.parametrize("name", ["covlr", "relation_kd"])
def test_a_zero_relation_weight_is_refused(name):
    from vlr.errors import ConfigError

    with pytest.raises(ConfigError, match=f"objective.beta=0 turns the relation term of objective={name} off"):
        create_objective(name, beta=0.0)


# -- the inner step as it was written before it became one code path -------------------------------
# A private copy of the earlier implementation (two inner steps; the caption-consistency term embedding
# the captions a second time), kept here only as the independent computation the current one must match.


def _earlier_all_params_step(obj, encoder, images, input_ids, attention_mask, ids, reference):
    from vlr.objectives.distributed import average_gradients

    v, t = encoder(images, input_ids, attention_mask)
    terms = obj.consistency(v, t, ids)
    l_c = terms["itc_i2t"] + terms["itc_t2i"]
    trainable = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad]
    extra = [p for p in obj.parameters() if p.requires_grad]
    wanted = trainable if obj.second_order else trainable + [(f"objective.{i}", p) for i, p in enumerate(extra)]
    grads = torch.autograd.grad(
        l_c, [p for _, p in wanted], create_graph=obj.second_order, retain_graph=obj.second_order, allow_unused=True
    )
    grads = average_gradients(list(grads))
    by_name = dict(zip((n for n, _ in wanted), grads, strict=False))
    fast = {n: p if by_name[n] is None else p - obj.alpha * by_name[n] for n, p in trainable}
    v_fast, t_fast = functional_call(encoder, fast, (images, input_ids, attention_mask), strict=False)
    relation = obj.beta * obj.preservation(v_fast, t_fast, reference)
    if obj.second_order:
        return {**terms, "relation": relation}
    carrier = sum((p * g).sum() for (_, p), g in zip(wanted, grads, strict=False) if g is not None)
    return {**{k: x.detach() for k, x in terms.items()}, "itc_grad": carrier - carrier.detach(), "relation": relation}


def _earlier_projections_step(obj, encoder, images, input_ids, attention_mask, ids, reference):
    from vlr.objectives.covlr import PROJECTION_PARAMS
    from vlr.objectives.distributed import average_gradients

    fi, ft = encoder.tower_features(images, input_ids, attention_mask)
    v, t = F.normalize(encoder.image_proj(fi), dim=-1), F.normalize(encoder.text_proj(ft), dim=-1)
    terms = obj.consistency(v, t, ids)
    stepped = [(n, p) for n, p in encoder.named_parameters() if p.requires_grad and n.endswith(PROJECTION_PARAMS)]
    grads = torch.autograd.grad(
        terms["itc_i2t"] + terms["itc_t2i"], [p for _, p in stepped], create_graph=obj.second_order, retain_graph=True
    )
    grads = average_gradients(list(grads))
    fast = {n: p - obj.alpha * g for (n, p), g in zip(stepped, grads, strict=False)}
    proj = {
        side: {k.split(".", 1)[1]: w for k, w in fast.items() if k.startswith(f"{side}_proj.")}
        for side in ("image", "text")
    }
    v_fast = F.normalize(functional_call(encoder.image_proj, proj["image"], (fi,), strict=False), dim=-1)
    t_fast = F.normalize(functional_call(encoder.text_proj, proj["text"], (ft,), strict=False), dim=-1)
    return {**terms, "relation": obj.beta * obj.preservation(v_fast, t_fast, reference)}


def _earlier_batch_terms(obj, encoder, batch, reference):
    consistency = {}
    if obj.consistency_weight:
        t = encoder.embed_texts(batch["input_ids"], batch["attention_mask"])
        t_pair = encoder.embed_texts(batch["pair_input_ids"], batch["pair_attention_mask"])
        consistency = {
            "caption_consistency": obj.consistency_weight * obj.caption_consistency(t, t_pair, batch["image_idx"])
        }
    rows = {"image": reference.rows["image"], "text": reference.rows["text"]}
    if obj.alpha == 0:
        v, t = encoder(batch["images"], batch["input_ids"], batch["attention_mask"])
        return {**obj(v, t, batch["image_idx"], reference=rows), **consistency}
    step = _earlier_projections_step if obj.virtual_params == "projections" else _earlier_all_params_step
    args = (batch["images"], batch["input_ids"], batch["attention_mask"], batch["image_idx"], rows)
    return {**step(obj, encoder, *args), **consistency}


def _terms_and_grads(terms_of, obj, encoder, batch, reference):
    encoder.zero_grad()
    obj.zero_grad()
    terms = terms_of(obj, encoder, batch, reference)
    total = torch.stack(list(terms.values())).sum()  # as the module sums them
    total.backward()
    grads = {n: p.grad.clone() for n, p in [*encoder.named_parameters(), *obj.named_parameters()] if p.grad is not None}
    return {k: v.detach().clone() for k, v in terms.items()}, total.detach(), grads


@pytest.mark.parametrize("consistency_weight", [0.0, 10.0])
@pytest.mark.parametrize(
    "name, options",
    [
        ("covlr", {"second_order": False, "virtual_params": "all"}),
        ("covlr", {"second_order": True, "virtual_params": "all"}),
        ("covlr", {"second_order": False, "virtual_params": "projections"}),
        ("covlr", {"second_order": True, "virtual_params": "projections"}),
        ("relation_kd", {}),
    ],
)
def test_the_step_equals_the_earlier_two_path_implementation(name, options, consistency_weight):
    """One inner step for every mode, the captions embedded once: the same terms and the same gradient
    (encoder and learnable temperature) as the earlier implementation, copied above."""
    images, texts, ids, ref_rows = _batch()
    pairs = torch.randn(6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    batch = {
        "images": images,
        "input_ids": texts,
        "attention_mask": None,
        "image_idx": ids,
        "pair_input_ids": pairs,
        "pair_attention_mask": None,
    }
    kwargs = {"alpha": 0.5, **options} if name == "covlr" else {}
    obj = create_objective(
        name, beta=2.0, temperature=0.2, learnable_temperature=True, consistency_weight=consistency_weight, **kwargs
    ).double()
    encoder, reference = _TextEncoder(), _RowsReference(ref_rows)

    def current(o, e, b, r):
        return o.batch_terms(e, b, r)

    # bit for bit; with the consistency term the caption embeddings' two gradients now meet before the
    # text tower instead of after it, so the sums round differently
    atol = 1e-13 if consistency_weight else 0.0
    want_terms, want_total, want_grads = _terms_and_grads(_earlier_batch_terms, obj, encoder, batch, reference)
    got_terms, got_total, got_grads = _terms_and_grads(current, obj, encoder, batch, reference)
    assert list(got_terms) == list(want_terms)  # the same terms, in the same order (the logged names)
    for key in want_terms:
        torch.testing.assert_close(got_terms[key], want_terms[key], rtol=0, atol=atol, msg=key)
    torch.testing.assert_close(got_total, want_total, rtol=0, atol=atol)
    assert got_grads.keys() == want_grads.keys()
    assert "temperature.log_value" in want_grads and "image_tower.weight" in want_grads
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=0, atol=atol, msg=key)
