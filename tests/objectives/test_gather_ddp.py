"""DDP exactness at the objective level, in one process: a global batch B split over 2 simulated
ranks (`tests.distributed.simulated_world`: the gathers and all-reduces of `vlr.objectives.distributed`
as two ranks would see them), each rank's gradient averaged as DDP averages, equals the
gradient of the 1-process loss on B. For every objective and mode, with the run's own model
(composed config) in float64, so any difference is a bug, not rounding."""

import pytest
import torch
from torch import nn

from tests.conftest import compose_config, small_run
from tests.distributed import simulated_world
from vlr.build import build_data_and_model
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


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _ddp_average(per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """What DDP's gradient all-reduce leaves on every rank: the mean of the ranks' gradients."""
    assert all(g.keys() == per_rank[0].keys() for g in per_rank)
    return {k: sum(g[k] for g in per_rank) / len(per_rank) for k in per_rank[0]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_ranks_match_one(monkeypatch, name):
    model = _Model(name)
    model(*_batch()).backward()
    want = _grads(model)

    world = simulated_world(monkeypatch, 2)

    def rank_step(rank):
        model.zero_grad()
        x_img, x_txt, ids = _batch()
        sl = slice(rank * B // 2, (rank + 1) * B // 2)
        model(x_img[sl], x_txt[sl], ids[sl]).backward()
        return _grads(model)

    got = _ddp_average(world.run(rank_step))
    assert world.passes >= 3  # the gathered features, then their gradients, then a pass that agrees
    assert got.keys() == want.keys()
    for key in want:
        assert torch.allclose(got[key], want[key], atol=1e-6), key


def test_a_rank_local_loss_would_be_caught(monkeypatch):
    """The check can fail: a loss over this rank's rows only (no gather) gives other gradients."""
    model = _Model("infonce")
    model(*_batch()).backward()
    want = _grads(model)
    world = simulated_world(monkeypatch, 2)
    monkeypatch.setattr("vlr.objectives.infonce.gather_with_grad", lambda x: x)
    monkeypatch.setattr("vlr.objectives.infonce.gather_no_grad", lambda x: x)

    def rank_step(rank):
        model.zero_grad()
        x_img, x_txt, ids = _batch()
        sl = slice(rank * B // 2, (rank + 1) * B // 2)
        model(x_img[sl], x_txt[sl], ids[sl]).backward()
        return _grads(model)

    got = _ddp_average(world.run(rank_step))
    assert not all(torch.allclose(got[k], want[k], atol=1e-6) for k in want)


# every objective in each mode that changes what crosses ranks (formerly 2-process CLI runs)
MODES = {
    "infonce": ["objective=infonce"],
    "triplet": ["objective=triplet"],
    "covlr": ["objective=covlr"],  # the virtual step's gradient is all-reduced explicitly
    "covlr+projections": ["objective=covlr", "objective.virtual_params=projections"],
    "covlr+consistency": ["objective=covlr", "objective.consistency_weight=10", "data.paired_captions=true"],
    "relation_kd": ["objective=relation_kd"],
    "sad": ["objective=sad"],
    "sad+mse": ["objective=sad", "objective.distance=mse"],
}
DETERMINISTIC = [
    "data.batch_size=10",
    "data.shuffle=false",
    "data.augment=false",
    "model.text_tower.config.hidden_dropout_prob=0",
    "model.text_tower.config.attention_probs_dropout_prob=0",
]


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_objective_on_two_ranks_equals_one_process(monkeypatch, tmp_path, synthetic_root, mode):
    cfg = compose_config(*small_run(synthetic_root, *DETERMINISTIC, *MODES[mode]), run_dir=tmp_path, root=tmp_path)
    datamodule, module = build_data_and_model(cfg)
    datamodule.setup("fit")
    module.reference.prepare("train", datamodule.split("train"), augmented=False)
    module.double()
    batch = next(iter(datamodule.train_dataloader()))
    batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    rows = batch["image_idx"].shape[0]
    assert rows == 10

    def step(part: dict) -> dict[str, torch.Tensor]:
        module.zero_grad()
        terms = module.objective.batch_terms(module.encoder, part, module.reference)
        torch.stack(list(terms.values())).sum().backward()
        return _grads(module)

    want = step(batch)
    world = simulated_world(monkeypatch, 2)
    shards = [{k: v[rank * rows // 2 : (rank + 1) * rows // 2] for k, v in batch.items()} for rank in range(2)]
    got = _ddp_average(world.run(lambda rank: step(shards[rank])))
    assert got.keys() == want.keys() and len(want) > 10
    for key in want:
        assert torch.allclose(got[key], want[key], rtol=1e-9, atol=1e-12), key
