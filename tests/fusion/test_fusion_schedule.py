"""How the fusion encoder trains: the negatives' temperature curriculum
(``model.fusion.negative_temperature_start``) and its own learning rate (``model.fusion.lr_scale``)."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import compose_config, run_vlr, small_run
from vlr.data import RetrievalDataModule
from vlr.errors import ConfigError
from vlr.models.schedules import parameter_groups, scale_learning_rates, total_training_steps
from vlr.models.with_fusion import FusionOptions
from vlr.runs.options import check_options


def test_without_a_start_the_temperature_is_constant():
    options = FusionOptions({"negative_temperature": 0.07})
    assert [options.temperature_at(s, 100) for s in (0, 37, 100)] == [0.07, 0.07, 0.07]


def test_the_temperature_goes_geometrically_from_the_start_then_stays():
    options = FusionOptions(
        {"negative_temperature": 0.07, "negative_temperature_start": 100, "negative_anneal_fraction": 0.5}
    )
    log_start, log_end = math.log(100), math.log(0.07)
    for step in (0, 1, 10, 25, 49):
        expected = math.exp(log_start + (log_end - log_start) * step / 50)
        assert options.temperature_at(step, 100) == pytest.approx(expected, rel=1e-12), step
    assert options.temperature_at(50, 100) == pytest.approx(0.07, rel=1e-12)
    assert options.temperature_at(99, 100) == pytest.approx(0.07, rel=1e-12)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("negative_temperature_start", 0, "model.fusion.negative_temperature_start must be > 0, got 0.0"),
        ("negative_anneal_fraction", 0, "model.fusion.negative_anneal_fraction must be in (0, 1], got 0.0"),
        ("negative_anneal_fraction", 1.5, "model.fusion.negative_anneal_fraction must be in (0, 1], got 1.5"),
        ("lr_scale", -1, "model.fusion.lr_scale must be > 0, got -1.0"),
    ],
)
def test_bad_values_are_one_line_naming_the_option(option, value, message):
    with pytest.raises(ConfigError) as err:
        FusionOptions({option: value})
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.fusion.lr_scale=abc", "model.fusion.lr_scale must be a finite number > 0, got 'abc'"),
        ("model.fusion.negative_temperature_start=true",
         "model.fusion.negative_temperature_start must be a finite number > 0, got True"),
        ("model.fusion.negative_anneal_fraction=1.5",
         "model.fusion.negative_anneal_fraction must be a finite number > 0 and <= 1, got 1.5"),
        ("eval.rerank.itc_weight=-1", "eval.rerank.itc_weight must be a finite number >= 0, got -1"),
    ],
)  # fmt: skip
def test_the_command_line_checks_name_the_option(tmp_path, override, message):
    with pytest.raises(ConfigError) as err:
        check_options(compose_config("fusion=default", override, run_dir=tmp_path / "run"))
    assert str(err.value) == message


def test_the_run_length_is_whichever_limit_ends_it_first():
    def trainer(max_steps, max_epochs=2):
        data = SimpleNamespace(train_batches_per_epoch=lambda: 3)
        return SimpleNamespace(max_steps=max_steps, max_epochs=max_epochs, accumulate_grad_batches=1, datamodule=data)

    assert total_training_steps(trainer(-1)) == 6
    assert total_training_steps(trainer(50)) == 6  # 2 epochs of 3 end it before step 50
    assert total_training_steps(trainer(4)) == 4


def test_scaled_parameters_get_their_own_named_groups_at_the_scaled_rate():
    module = torch.nn.ModuleDict({"encoder": torch.nn.Linear(3, 4), "fusion": torch.nn.Linear(4, 2)})
    optimizer = scale_learning_rates(
        torch.optim.AdamW(parameter_groups(module, {"fusion.": 4.0}), lr=0.01, weight_decay=0.1)
    )
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"decay", "no_decay", "fusion/decay", "fusion/no_decay"}
    assert groups["fusion/decay"]["params"] == [module["fusion"].weight]
    assert groups["fusion/no_decay"]["params"] == [module["fusion"].bias]
    assert groups["decay"]["params"] == [module["encoder"].weight]
    assert groups["fusion/decay"]["lr"] == pytest.approx(0.04) and groups["decay"]["lr"] == 0.01
    assert groups["fusion/no_decay"]["weight_decay"] == 0.0 and groups["fusion/decay"]["weight_decay"] == 0.1
    # a factor of 1 keeps the two plain groups
    assert [g["name"] for g in parameter_groups(module, {"fusion.": 1.0})] == ["decay", "no_decay"]


@pytest.mark.slow  # a 4-step fusion run with re-ranked evaluations
def test_a_run_draws_its_negatives_at_the_annealed_temperature_and_trains_fusion_faster(
    tmp_path, synthetic_root, monkeypatch
):
    import vlr.models.with_fusion as with_fusion

    drawn = []
    real = with_fusion.itm_loss

    def recording(*args, **kwargs):
        drawn.append(args[8])  # the temperature
        return real(*args, **kwargs)

    monkeypatch.setattr(with_fusion, "itm_loss", recording)
    counted = []
    per_epoch = RetrievalDataModule.train_batches_per_epoch

    def counting(self):
        counted.append(1)
        return per_epoch(self)

    monkeypatch.setattr(RetrievalDataModule, "train_batches_per_epoch", counting)
    run = run_vlr(
        "train",
        *small_run(
            synthetic_root,
            "fusion=default",
            "model.fusion.negative_temperature=0.07",
            "model.fusion.negative_temperature_start=100",
            "model.fusion.negative_anneal_fraction=0.5",
            "model.fusion.lr_scale=4",
            "+trainer.limit_train_batches=2",
            "trainer.max_epochs=2",
            "eval.rerank.k=4",
            "eval.rerank.itc_weight=0.5",
        ),
        dir=tmp_path / "run",
    )
    assert run.returncode == 0, run.output
    # 4 steps, annealed over the first 2: 100, sqrt(100 x 0.07), then 0.07
    assert drawn == pytest.approx([100.0, math.sqrt(100 * 0.07), 0.07, 0.07], rel=1e-12)
    assert len(counted) <= 2  # the run's length is counted for the schedule and once for the curriculum
    assert json.loads((run.dir / "evaluation.json").read_text())["rerank"]["itc_weight"] == 0.5
    state = torch.load(run.dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    groups = {g["name"]: g for g in state["optimizer_states"][0]["param_groups"]}
    assert groups["fusion/decay"]["initial_lr"] == pytest.approx(4 * groups["decay"]["initial_lr"], rel=1e-12)
    assert groups["fusion/no_decay"]["lr"] == pytest.approx(4 * groups["no_decay"]["lr"], rel=1e-12)
    fusion_params = sum(1 for k in state["state_dict"] if k.startswith("fusion."))
    assert len(groups["fusion/decay"]["params"]) + len(groups["fusion/no_decay"]["params"]) == fusion_params
