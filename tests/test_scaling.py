"""Clusters on existing engines (issue 31): the SLURM launcher's job script and FSDP's composed
strategy. (torchrun over two "nodes" giving the 1-process weights: tests/test_ddp_exactness.py.)"""

import os
from pathlib import Path

import hydra
import pytest

from tests.test_config import _compose


def _fake_sbatch(bin_dir: Path, copy_to: Path) -> None:
    """An ``sbatch`` that keeps the script it is given and answers like SLURM (and an ``srun``,
    whose presence is how submitit tells it is on a cluster)."""
    bin_dir.mkdir()
    for name, body in (("sbatch", f'cp "$1" {copy_to}\necho "Submitted batch job 4242"'), ("srun", "exit 0")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


def test_the_slurm_launcher_preset_writes_the_job_script_it_promises(tmp_path, monkeypatch):
    """Compose ``hydra/launcher=slurm`` for 2 nodes x 4 GPUs, build its launcher, hand its
    parameters to submitit as the plugin does, and read the sbatch script submitit writes."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    cfg = _compose(
        [
            "hydra/launcher=slurm",
            "trainer=ddp",
            "trainer.devices=4",
            "trainer.num_nodes=2",
            "hydra.launcher.gpus_per_node=4",
            "hydra.launcher.partition=gpu",
        ]
    )
    launcher = hydra.utils.instantiate(cfg.hydra.launcher)
    params = dict(launcher.params)
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (2, 4, 4)
    _fake_sbatch(tmp_path / "bin", tmp_path / "job.sh")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{
            (k if k in base else f"slurm_{k}"): v
            for k, v in params.items()
            if k not in ("submitit_folder", "max_num_timeout")
        }
    )
    job = executor.submit(print, "cell")
    assert job.job_id == "4242"
    script = (tmp_path / "job.sh").read_text()
    for line in (
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=64GB",
        "#SBATCH --time=1440",
        "#SBATCH --signal=USR2@120",
    ):
        assert line in script, line
    assert "srun" in script and "submitit.core._submit" in script


def test_fsdp_composes_and_lightning_keeps_it_to_gpus():
    """``trainer.strategy=fsdp`` reaches Lightning as written; Lightning refuses FSDP without a
    GPU (so it is not smoke-tested on CPU: docs/scaling.md says so)."""
    cfg = _compose(["trainer=ddp", "trainer.strategy=fsdp", "trainer.devices=8"])
    assert (cfg.trainer.strategy, cfg.trainer.accelerator, cfg.trainer.devices) == ("fsdp", "gpu", 8)
    cfg = _compose(["trainer=ddp_cpu", "trainer.strategy=fsdp", "logger=none"])
    trainer_cfg = {k: v for k, v in cfg.trainer.items() if k != "skip_nonfinite"}  # vlr's own (vlr.train)
    with pytest.raises(Exception, match="requires a GPU accelerator"):
        hydra.utils.instantiate(trainer_cfg)
    strategy = hydra.utils.instantiate(
        {"_target_": "lightning.pytorch.strategies.FSDPStrategy", "sharding_strategy": "SHARD_GRAD_OP"}
    )
    assert strategy.sharding_strategy.name == "SHARD_GRAD_OP"
