import math

import pytest
import torch
import torch.nn.functional as F

from vlr.objectives import create_objective


def _hand_infonce(v, t, ids, tau):
    """Loop-by-loop soft-target InfoNCE, both directions, averaged."""
    v, t = v.double().numpy(), t.double().numpy()
    n = len(ids)
    logits = v @ t.T / tau

    def direction(L):
        total = 0.0
        for i in range(n):
            positives = [j for j in range(n) if ids[j] == ids[i]]
            log_z = math.log(sum(math.exp(L[i, k]) for k in range(n)))
            total += -sum((L[i, j] - log_z) / len(positives) for j in positives)
        return total / n

    return direction(logits) / 2, direction(logits.T) / 2


def test_matches_hand_computation_with_duplicate_images():
    g = torch.Generator().manual_seed(0)
    v = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    t = F.normalize(torch.randn(5, 4, generator=g), dim=-1)
    ids = torch.tensor([3, 3, 7, 9, 3])  # pairs 0, 1 and 4 show the same image
    obj = create_objective("infonce", temperature=0.1)
    terms = obj(v, t, ids)
    want_i2t, want_t2i = _hand_infonce(v, t, ids.tolist(), 0.1)
    assert set(terms) == {"itc_i2t", "itc_t2i"}
    assert terms["itc_i2t"].item() == pytest.approx(want_i2t, rel=1e-5)
    assert terms["itc_t2i"].item() == pytest.approx(want_t2i, rel=1e-5)
    assert obj.log_values()["temperature"] == pytest.approx(0.1)


def test_duplicates_are_positives_not_negatives():
    # Pairs 0 and 1 show the same image. If its captions are positives for both pairs,
    # swapping them between the pairs changes nothing; a hard (diagonal-only) target
    # would count the other caption as a negative and change.
    g = torch.Generator().manual_seed(2)
    v = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    t = F.normalize(torch.randn(3, 4, generator=g), dim=-1)
    ids = torch.tensor([0, 0, 1])
    obj = create_objective("infonce", temperature=0.1)
    swapped = t[[1, 0, 2]]
    same = sum(obj(v, t, ids).values()), sum(obj(v, swapped, ids).values())
    assert same[0].item() == pytest.approx(same[1].item(), rel=1e-6)
    distinct = sum(obj(v, t, torch.arange(3)).values()), sum(obj(v, swapped, torch.arange(3)).values())
    assert abs(distinct[0].item() - distinct[1].item()) > 1e-3


def test_temperature_learnable_or_fixed():
    learn = create_objective("infonce", temperature=0.07, learnable_temperature=True)
    fixed = create_objective("infonce", temperature=0.07, learnable_temperature=False)
    assert [p.requires_grad for p in learn.parameters()] == [True]
    assert [p.requires_grad for p in fixed.parameters()] == [False]


def test_unknown_objective_lists_registered_names():
    with pytest.raises(
        KeyError, match="unknown objective 'nce'; registered: covlr, infonce, relation_kd, sad, triplet"
    ):
        create_objective("nce")


def test_a_temperature_at_its_bound_keeps_moving():
    """Bounded in place after each step (X-VLM): a clamp inside the loss would cut the gradient
    at the bound and the temperature would stay there for good."""
    obj = create_objective("infonce", temperature=0.07)
    opt = torch.optim.SGD(obj.parameters(), lr=5.0)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(8, 4, generator=g), dim=-1)
    t = torch.nn.functional.normalize(v + 3.0 * torch.randn(8, 4, generator=g), dim=-1)  # noisy pairs: wants it warmer
    values = []
    for _ in range(12):
        opt.zero_grad()
        sum(obj(v, t, torch.arange(8)).values()).backward()
        assert obj.temperature.log_value.grad.abs() > 0  # never a zero gradient, bound or not
        opt.step()
        obj.apply_bounds_()
        values.append(float(obj.temperature()))
    assert max(values) == pytest.approx(0.5) and all(0.001 <= x <= 0.5 + 1e-7 for x in values)
    # the other way round: aligned pairs want it colder, and it leaves the upper bound at once
    t2 = v.clone()
    opt.zero_grad()
    sum(obj(v, t2, torch.arange(8)).values()).backward()
    opt.step()
    obj.apply_bounds_()
    assert float(obj.temperature()) < 0.5


def test_an_objective_from_another_package_is_built_by_class_path():
    from vlr.errors import ConfigError
    from vlr.objectives import create_objective

    obj = create_objective("mine", cls="vlr.objectives.infonce.InfoNCE", temperature=0.05)
    assert type(obj).__name__ == "InfoNCE" and abs(float(obj.temperature()) - 0.05) < 1e-6
    with pytest.raises(
        ConfigError, match="objective.cls=torch.nn.Linear is not a subclass of vlr.objectives.Objective"
    ):
        create_objective("mine", cls="torch.nn.Linear")
