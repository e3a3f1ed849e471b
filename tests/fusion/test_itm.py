"""ITM with in-batch hard negatives (`vlr.models.itm`): who can be a negative, a private and
step-seeded draw, and 2 simulated DDP ranks equal to one process on the same global batch."""

import pytest
import torch
import torch.nn.functional as F

from tests.distributed import simulated_world
from vlr.models.fusion import FusionEncoder
from vlr.models.itm import itm_loss, sample_hard_negatives

B, WIDTH, IMG_WIDTH, N_IMG_TOK = 8, 16, 12, 5
IDS = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4])  # duplicates straddle the rank boundary


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([3, 6, 4, 5, 2, 6, 3, 4])  # one padded length on both ranks (the simulated
    # ranks cannot agree on shapes that depend on another rank's; different lengths: torchrun in
    # tests/test_ddp_exactness.py)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    return {
        "v": F.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1),
        "t": F.normalize(torch.randn(B, 4, generator=g, dtype=torch.float64), dim=-1),
        "image_tokens": torch.randn(B, N_IMG_TOK, IMG_WIDTH, generator=g, dtype=torch.float64),
        "text_tokens": torch.randn(B, 6, WIDTH, generator=g, dtype=torch.float64) * mask[..., None],
        "mask": mask,
    }


def test_negatives_never_share_the_image_and_follow_the_generator():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(B, B, generator=g)
    state = torch.get_rng_state()
    draws = [sample_hard_negatives(sim, IDS, torch.Generator().manual_seed(s), 0.07) for s in range(50)]
    assert torch.equal(torch.get_rng_state(), state)  # no global RNG moved
    for neg_t, neg_i in draws:
        assert (IDS[neg_t] != IDS).all() and (IDS[neg_i] != IDS).all()
    again = sample_hard_negatives(sim, IDS, torch.Generator().manual_seed(7), 0.07)
    assert all(torch.equal(a, b) for a, b in zip(again, draws[7], strict=True))
    assert len({tuple(d[0].tolist()) for d in draws}) > 1  # seeds differ, draws differ


def test_hard_negatives_follow_the_itc_similarity():
    """Caption 4 is by far the most similar to image 0: at a low temperature it is nearly always drawn."""
    sim = torch.zeros(B, B)
    sim[0, 4] = 1.0
    picks = [int(sample_hard_negatives(sim, IDS, torch.Generator().manual_seed(s), 0.05)[0][0]) for s in range(40)]
    assert picks.count(4) >= 38


def test_a_row_whose_batch_is_all_its_image_has_no_negative():
    ids = torch.tensor([5, 5, 5])
    neg_t, neg_i = sample_hard_negatives(torch.zeros(3, 3), ids, torch.Generator().manual_seed(0), 0.07)
    assert neg_t.tolist() == [-1, -1, -1] and neg_i.tolist() == [-1, -1, -1]


def _fusion():
    return FusionEncoder(WIDTH, IMG_WIDTH, layers=2, heads=4, dropout=0.0).double()


def _loss(fusion, part, ids, seed, keys=None):
    return itm_loss(
        fusion,
        part["v"],
        part["t"],
        part["image_tokens"],
        part["text_tokens"],
        part["mask"],
        ids,
        torch.Generator().manual_seed(seed),
        keys=keys,
    )


def test_itm_loss_is_the_mean_cross_entropy_of_the_three_pairs_per_row():
    fusion, batch = _fusion(), _batch()
    got = _loss(fusion, batch, IDS, seed=3)
    neg_t, neg_i = sample_hard_negatives(batch["v"] @ batch["t"].T, IDS, torch.Generator().manual_seed(3), 0.07)
    rows = torch.arange(B)
    caption = torch.cat([rows, rows, neg_t])
    image = torch.cat([rows, neg_i, rows])
    logits = fusion(batch["text_tokens"][caption], batch["mask"][caption], batch["image_tokens"][image])
    labels = torch.cat([torch.ones(B), torch.zeros(2 * B)]).long()
    assert got.item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-12)


def test_two_ranks_equal_one_process(monkeypatch):
    """The loss (mean of the ranks') and every gradient (DDP's average of the ranks') of 2
    simulated ranks x 4 rows equal one process's on the 8 rows, negatives drawn across ranks."""
    fusion = _fusion()
    full = _batch()
    leaves = {k: full[k].clone().requires_grad_(True) for k in ("image_tokens", "text_tokens")}
    want = _loss(fusion, {**full, **leaves}, IDS, seed=11)
    want_grads = torch.autograd.grad(want, [*leaves.values(), *fusion.parameters()])

    world = simulated_world(monkeypatch, 2)

    def rank_step(rank):
        sl = slice(rank * B // 2, (rank + 1) * B // 2)
        part = {k: v[sl] for k, v in full.items()}
        mine = {k: part[k].clone().requires_grad_(True) for k in ("image_tokens", "text_tokens")}
        loss = _loss(fusion, {**part, **mine}, IDS[sl], seed=11)
        grads = torch.autograd.grad(loss, [*mine.values(), *fusion.parameters()])
        return loss.detach(), grads

    results = world.run(rank_step)
    assert world.passes >= 3
    got = torch.stack([r[0] for r in results]).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-10)
    assert results[0][0].item() != pytest.approx(results[1][0].item())  # each rank scores its own rows
    # token gradients: each rank's slice (on rank r, DDP leaves them unaveraged: they are not parameters)
    for i, name in enumerate(("image_tokens", "text_tokens")):
        tokens = torch.cat([r[1][i] for r in results])
        # each rank's loss is its share x W, so its gradient is W x the global loss's
        assert torch.allclose(tokens / 2, want_grads[i], atol=1e-12), name
    for j, w in enumerate(want_grads[2:], start=2):
        assert torch.allclose((results[0][1][j] + results[1][1][j]) / 2, w, atol=1e-12)


KEYS = torch.tensor([40, 11, 12, 23, 34, 35, 36, 47])  # the rows' caption indices, not in row order


def test_with_keys_the_negatives_follow_the_rows_not_their_order():
    """A permutation of the batch permutes the drawn negatives with it (each row keeps its
    negative caption and image), and the loss is the same. (A high temperature: near-uniform
    draws, where the order of the random numbers decides.)"""
    sim = torch.randn(B, B, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    perm = torch.tensor([5, 2, 7, 0, 3, 6, 1, 4])
    neg_t, neg_i = sample_hard_negatives(sim, IDS, torch.Generator().manual_seed(9), 10.0, KEYS)
    p_t, p_i = sample_hard_negatives(sim[perm][:, perm], IDS[perm], torch.Generator().manual_seed(9), 10.0, KEYS[perm])
    assert torch.equal(perm[p_t], neg_t[perm]) and torch.equal(perm[p_i], neg_i[perm])
    assert (IDS[neg_t] != IDS).all() and (IDS[neg_i] != IDS).all()
    # without keys the draw goes by position: the same permutation gives other negatives
    plain = sample_hard_negatives(sim, IDS, torch.Generator().manual_seed(9), 10.0)
    moved = sample_hard_negatives(sim[perm][:, perm], IDS[perm], torch.Generator().manual_seed(9), 10.0)
    assert not torch.equal(perm[moved[0]], plain[0][perm])
    with pytest.raises(ValueError, match=r"^keys: one per row, 8 rows, got shape \(7,\)$"):
        sample_hard_negatives(sim, IDS, torch.Generator(), 0.07, KEYS[:7])
    fusion, batch = _fusion(), _batch()
    shuffled = {k: v[perm] for k, v in batch.items()}
    want = _loss(fusion, batch, IDS, seed=4, keys=KEYS)
    assert _loss(fusion, shuffled, IDS[perm], seed=4, keys=KEYS[perm]).item() == pytest.approx(want.item(), rel=1e-12)


def test_two_ranks_given_interleaved_rows_equal_one_process(monkeypatch):
    """DDP's sampler gives rank r the rows r, r + 2, ... of one process's batch, so the gathered
    batch is that batch reordered; with the caption keys, loss and gradients still equal one
    process's on the batch in its own order."""
    fusion, full = _fusion(), _batch()
    want = _loss(fusion, full, IDS, seed=13, keys=KEYS)
    want_grads = torch.autograd.grad(want, list(fusion.parameters()))
    world = simulated_world(monkeypatch, 2)

    def rank_step(rank):
        rows = torch.arange(rank, B, 2)
        part = {k: v[rows] for k, v in full.items()}
        loss = _loss(fusion, part, IDS[rows], seed=13, keys=KEYS[rows])
        return loss.detach(), torch.autograd.grad(loss, list(fusion.parameters()))

    results = world.run(rank_step)
    assert torch.stack([r[0] for r in results]).mean().item() == pytest.approx(want.item(), rel=1e-10)
    for j, w in enumerate(want_grads):
        assert torch.allclose((results[0][1][j] + results[1][1][j]) / 2, w, atol=1e-12)
