"""Clusters on existing engines (issue 31): the SLURM launcher's job script, FSDP's composed
strategy, and torchrun over two "nodes" giving the 2-process weights."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import hydra
import pytest
import torch

from experiments.ddp_drift import DETERMINISTIC
from tests.test_config import _compose

REPO = Path(__file__).resolve().parent.parent


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


# 3 SGD steps, nothing random (tests/test_ddp_exactness.py's setting)
RUN = [
    "data.num_train=12",
    *(o for o in DETERMINISTIC if not o.startswith("logger=")),
    "logger=none",
    "objective=infonce",
]


@pytest.mark.slow
def test_torchrun_on_two_nodes_gives_the_two_process_weights(tmp_path):
    """``torchrun --nnodes=2 --nproc-per-node=1`` on localhost (two "nodes", gloo) and Lightning's
    own 2-process launch train to the same weights."""
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONPATH": str(REPO)}
    launches = {  # all at once: the runs are mostly start-up, so together they take little more than one
        "two": [sys.executable, "-m", "vlr.train", *RUN, "trainer=ddp_cpu", f"hydra.run.dir={tmp_path / 'two'}"],
    }
    with socket.socket() as s:  # a free port (two suites, or two pytest workers, never share one)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for rank in (0, 1):
        launches[f"node{rank}"] = [
            *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1"),
            *(f"--node-rank={rank}", "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "vlr.train"),
            *(
                *RUN,
                "trainer=ddp_cpu",
                "trainer.devices=1",
                "trainer.num_nodes=2",
                f"hydra.run.dir={tmp_path / 'nodes'}",
            ),
        ]
    procs = {
        name: subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, cmd in launches.items()
    }
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, out[-3000:])
    two = torch.load(tmp_path / "two" / "checkpoints" / "last.ckpt", weights_only=True)
    multi = torch.load(tmp_path / "nodes" / "checkpoints" / "last.ckpt", weights_only=True)
    assert two["global_step"] == multi["global_step"] == 3
    assert two["state_dict"].keys() == multi["state_dict"].keys()
    for key, value in two["state_dict"].items():
        assert torch.allclose(value.double(), multi["state_dict"][key].double(), atol=1e-5, rtol=0), key
