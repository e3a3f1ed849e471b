"""TensorBoard runs carry the W&B run's group and name (a variant's ``-v<hash>`` too), so a
sweep's runs are told apart in TensorBoard as in W&B, not shown as ``0/``, ``1/``."""

import hydra
import pytest

from tests.test_following_runs import compose_run
from vlr.runs import label_runs


@pytest.mark.parametrize("extra", [[], ["model.optimizer.lr=0.002"]])
def test_tensorboard_names_runs_as_wandb_does(tmp_path, extra):
    run_dir = tmp_path / "run"
    cfg = compose_run(run_dir, "logger=[tensorboard,wandb]", "seed=4", *extra)
    label_runs(cfg)
    wandb, board = cfg.logger.wandb, cfg.logger.tensorboard
    assert (board.name, board.version) == (wandb.group, wandb.name)
    assert wandb.name.startswith("infonce-synthetic-tiny-none0.0-s4")
    assert (wandb.name == "infonce-synthetic-tiny-none0.0-s4") == (not extra)  # a variant: -v<hash> on both
    logger = hydra.utils.instantiate(board)
    assert logger.log_dir == str(run_dir / "tensorboard" / wandb.group / wandb.name)
