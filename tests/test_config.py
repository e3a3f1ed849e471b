"""Every config group option composes, and the objects it describes instantiate."""

import hydra
import pytest
from omegaconf import OmegaConf

from tests.conftest import REPO, compose_config

CONF = REPO / "vlr" / "conf"
GROUPS = [
    "data",
    "model",
    "objective",
    "trainer",
    "logger",
    "imbalance",
    "callbacks",
    "paths",
    "hydra",
    "experiment",
    "hparams_search",
]


def _options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides, name="train"):
    return compose_config(*overrides, name=name)


@pytest.mark.parametrize("group, option", [(g, o) for g in GROUPS for o in _options(g)])
def test_every_option_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    assert OmegaConf.to_container(cfg.model, resolve=True)["_target_"] == "vlr.models.RetrievalModule"
    assert OmegaConf.to_container(cfg.objective, resolve=True)["name"] == cfg.objective.name
    assert cfg.data.name


@pytest.mark.parametrize("option", _options("objective"))
def test_objectives_instantiate(option):
    cfg = _compose([f"objective={option}"])
    obj = hydra.utils.instantiate(cfg.objective)
    assert obj.__class__.__module__.startswith("vlr.objectives")


def test_logger_list_and_none():
    assert set(_compose(["logger=[csv,wandb]"]).logger) == {"csv", "wandb"}
    assert set(_compose([]).logger) == {"csv", "wandb"}
    assert not _compose(["logger=none"]).get("logger")


def test_eval_config_composes():
    cfg = _compose(["ckpt_path=x.ckpt"], name="eval")
    assert cfg.from_run and cfg.split == "test"


def test_cluster_presets_compose():
    """The SLURM launcher and Optuna sweeper presets (their plugins are dev dependencies)."""
    cfg = _compose(["hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2"])
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert cfg.hydra.launcher.nodes == 2 and cfg.hydra.launcher.tasks_per_node == cfg.hydra.launcher.gpus_per_node
    cfg = _compose(["hparams_search=covlr_optuna"])
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.objective.name == "covlr"
    assert set(cfg.hydra.sweeper.params) >= {"objective.alpha", "objective.beta"}


def test_weighted_sweep_value():
    from omegaconf import OmegaConf

    from vlr.runs import sweep_value

    metrics = {"val/rsum": 200.0, "val/rsum_single": 100.0}
    assert sweep_value(OmegaConf.create({"optimized_metric": "val/rsum"}), metrics) == 200.0
    assert (
        sweep_value(OmegaConf.create({"optimized_metric": {"val/rsum": 1.0, "val/rsum_single": 0.5}}), metrics) == 250.0
    )
    with pytest.raises(KeyError, match=r"optimized_metric names metrics that were not logged: \['val/x'\]"):
        sweep_value(OmegaConf.create({"optimized_metric": {"val/x": 1.0}}), metrics)
