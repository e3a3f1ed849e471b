"""Hydra multirun with Lightning's DDP: the children join the job's folder, and the next job
of the sweep (same process) starts without the previous job's process group."""

from __future__ import annotations

import os
import sys

from omegaconf import read_write


def share_run_dir_with_ddp_children() -> None:
    """Under Hydra multirun, make Lightning's DDP child processes join this job's directory.

    Lightning starts each child with ``sys.argv`` plus ``hydra.run.dir=<HydraConfig run.dir>``;
    in a multirun that would repeat the whole sweep (``-m`` and the sweep lists are in
    ``sys.argv``) in the default run directory. Here ``sys.argv`` becomes this job's own
    overrides, and ``run.dir`` this job's output directory.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    sys.argv = [sys.argv[0], *hc.overrides.task]
    with read_write(hc.run):  # type: ignore[arg-type]  # a structured config node
        hc.run.dir = hc.runtime.output_dir


LIGHTNING_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "PL_GLOBAL_SEED")


def release_distributed() -> None:
    """End of a multirun job: the next job of the sweep runs in this same process, so tear down
    the process group and the launch variables Lightning left behind; otherwise it would reuse
    a group whose other ranks have exited, on the same port."""
    import torch.distributed as dist
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key in LIGHTNING_DDP_ENV:
        os.environ.pop(key, None)
