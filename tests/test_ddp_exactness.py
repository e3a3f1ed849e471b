"""The suite's one real multi-process test: DDP on gloo processes ends with one process's numbers,
for both ways a job gets its ranks. Started together (the runs are mostly start-up):

- a Hydra sweep of two ``vlr.train trainer=ddp_cpu`` jobs (Lightning starts each job's second
  process, global batch B). Each job's ranks share one directory (the sweep is not re-run by the
  second rank, which would happen with Lightning's own re-launch of ``sys.argv``), the second job
  starts after the first released its process group, and a job ends with the weights of the same
  run on 1 process (batch B); then ``vlr.eval`` of its checkpoint on 2 ranks (the odd-sized val
  split divides unevenly between them) equals the 1-process evaluation;
- ``torchrun --nnodes=2 --nproc-per-node=1`` on localhost (two "nodes", one rank each) of a job
  with the fusion encoder (``fusion=default``) and re-ranking in evaluation (``eval.rerank.k``):
  ITM's hard negatives drawn over the gathered batch, its loss and gradients with the token states
  of ranks whose loaders padded their captions to different lengths (checked, from the run's own
  loaders), and the sharded re-ranking of val and test, against the same job in one process:
  final weights and every val/test metric, ``rerank/...`` included.

SAD (the sweep) in two stages: epoch 0 ITC only, then every term from the best stage-1 checkpoint,
which every rank must restore. Shuffling, augmentation and dropout are off, so both runs draw the
same data. SGD with momentum, not AdamW: some parameters (the key part of a ViT's qkv bias) have an
exactly zero true gradient, and Adam normalises the remaining float rounding noise into full-size
steps. The fusion job runs in float64 (`experiments.ddp_drift`: rounding then shrinks by ~1e-9, so
its weights and metrics must agree almost exactly). The ranks' gather lists rank 0's rows (the
sampler's even positions) before rank 1's, where one process interleaves them; ITM draws its
negatives in the order of the captions' indices, so the reference is a plain 1-process run.
What crosses ranks inside each objective is checked exactly, in one process, by
`tests/objectives/test_gather_ddp.py` and `tests/fusion/test_itm.py`; the evaluator's sync by
`tests/metrics/test_evaluator.py`; the re-ranking's by `tests/fusion/test_rerank_ddp.py`.
"""

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.ddp_drift import DETERMINISTIC
from tests.conftest import compose_config, run_vlr

# 60 captions / batch 20 = 3 steps an epoch; stage 2 starts at epoch 1
ARGS = [
    "data.num_train=12",
    *(o for o in DETERMINISTIC if not o.startswith("seed=")),
    "objective=sad",
    "objective.stage1_epochs=1",
    "trainer.max_epochs=2",
]
# infonce + ITM for one epoch (3 steps), val and test re-ranked (their top 4 by ITM), in float64
FUSION = [
    "data.num_train=12",
    *DETERMINISTIC,
    "fusion=default",
    "model.fusion.dropout=0",  # (the towers' dropout is off in DETERMINISTIC)
    "eval.rerank.k=4",
    "trainer.precision=64-true",
]
WAIT = 900  # seconds a launch may take: generous, the machine may be busy with other tests


@pytest.mark.slow
def test_a_sweep_of_ddp_jobs_and_a_torchrun_job_equal_one_process(tmp_path):
    sweep, nodes = tmp_path / "multi", tmp_path / "nodes"
    with socket.socket() as s:  # a free port (two suites, or two pytest workers, never share one)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launches = {"sweep": ["vlr.train", "-m", "seed=5,6", *ARGS, "trainer=ddp_cpu", f"hydra.sweep.dir={sweep}"]}
    for rank in (0, 1):
        launches[f"node{rank}"] = [
            *("torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}"),
            *("--master-addr=127.0.0.1", f"--master-port={port}", "-m", "vlr.train"),
            *(*FUSION, "trainer=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2", f"hydra.run.dir={nodes}"),
        ]
    procs = {name: _start(args, tmp_path, name) for name, args in launches.items()}
    try:
        # in this process while they run: the 1-process runs they are compared with
        one = run_vlr("train", *ARGS, "seed=5", "test=false", dir=tmp_path / "one")
        assert one.returncode == 0, one.output[-3000:]
        initial = _initial_weights(tmp_path)
        fused_one = run_vlr("train", *FUSION, dir=tmp_path / "fused_one")
        assert fused_one.returncode == 0, fused_one.output[-3000:]
        lengths, fused_initial = _padded_lengths_on_two_ranks(tmp_path)
        # the ranks' loaders pad their captions to different lengths (each to its own batch's
        # longest caption), so the ITM gather has to pad them to one length
        assert any(a != b for a, b in zip(lengths[0], lengths[1], strict=True)), lengths

        _finish(procs["sweep"], tmp_path, "sweep")
        _check_the_sweep(tmp_path, sweep, one, initial)
        two_dir = sweep / "0"
        ckpt = two_dir / "checkpoints" / "last.ckpt"
        # `vlr.eval` itself on 2 ranks, beside the 1-process evaluation of the same checkpoint
        eval_dir = tmp_path / "eval2"
        procs["eval2"] = _start(
            ["vlr.eval", f"ckpt_path={ckpt}", "split=val", "trainer=ddp_cpu", f"hydra.run.dir={eval_dir}"],
            tmp_path,
            "eval2",
        )
        # what the 2 processes logged for validation = a 1-process evaluation of their last weights
        logged = [r for r in csv.DictReader(open(two_dir / "csv" / "metrics.csv")) if r.get("val/rsum")][-1]
        single = run_vlr("eval", f"ckpt_path={ckpt}", "split=val", dir=tmp_path / "eval")
        assert single.returncode == 0, single.output[-3000:]
        assert "val/rsum" in single.metrics
        for key, value in single.metrics.items():
            assert float(logged[key]) == pytest.approx(value, abs=1e-4), key
        # every metric of the 2-rank `vlr.eval` equals the 1-process evaluation's, and both ranks
        # write into one eval folder
        _finish(procs["eval2"], tmp_path, "eval2")
        assert not (tmp_path / "outputs").exists()
        on_two = json.loads((eval_dir / "metrics.json").read_text())
        assert on_two.keys() == single.metrics.keys()
        for key, value in single.metrics.items():
            assert on_two[key] == pytest.approx(value, abs=1e-3), key

        for rank in (0, 1):
            _finish(procs[f"node{rank}"], tmp_path, f"node{rank}")
        _check_the_torchrun_job(nodes, fused_one, fused_initial)
    finally:
        for proc in procs.values():
            _stop(proc)


def _check_the_sweep(tmp_path: Path, sweep: Path, one, initial: dict) -> None:
    out = (tmp_path / "sweep.log").read_text()
    assert "stage 2 starts from the best stage-1 checkpoint" in out
    # one directory per job, shared by its ranks: none wandered off to a run directory of its own,
    # re-ran the sweep, or wrote a stray checkpoint
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for job, seed in (("0", 5), ("1", 6)):
        assert sorted(p.name for p in (sweep / job / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
        assert f"seed: {seed}" in (sweep / job / ".hydra" / "config.yaml").read_text()
        assert (sweep / job / "metrics.json").is_file()
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "multirun").exists()

    two_dir = sweep / "0"
    w1, w2 = one.checkpoint()["state_dict"], torch.load(two_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert w2["global_step"] == one.checkpoint()["global_step"] == 6
    w2 = w2["state_dict"]
    assert w1.keys() == w2.keys()
    moved = 0
    for key in w1:
        assert torch.allclose(w1[key].double(), w2[key].double(), atol=1e-5, rtol=0), key
        moved += key.startswith("encoder.") and not torch.equal(w2[key], initial[key].to(w2[key].dtype))
    assert moved > 10  # training really changed the weights (and they started equal)
    tested = json.loads((two_dir / "metrics.json").read_text())
    want = sum(tested[f"test/{d}/R@{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    assert tested["test/rsum"] == pytest.approx(want, abs=1e-3)


def _check_the_torchrun_job(nodes: Path, one, initial: dict) -> None:
    """The 2 "nodes" trained to the 1-process weights (float64: to ~1e-15) and logged its val
    and test metrics, the re-ranked ones included."""
    multi = torch.load(nodes / "checkpoints" / "last.ckpt", weights_only=True)
    single = one.checkpoint()
    assert multi["global_step"] == single["global_step"] == 3
    assert multi["state_dict"].keys() == single["state_dict"].keys()
    for key, value in single["state_dict"].items():
        assert value.dtype == torch.float64 or not value.is_floating_point(), key
        assert torch.allclose(value, multi["state_dict"][key], atol=1e-9, rtol=0), key
    fusion = [k for k in initial if k.startswith("fusion.")]
    moved = sum(not torch.equal(multi["state_dict"][k], initial[k].double()) for k in fusion)
    assert moved > len(fusion) // 2  # ITM trained the fusion encoder
    metrics, want = json.loads((nodes / "metrics.json").read_text()), one.metrics
    assert {"val/rerank/rsum", "test/rerank/rsum", "test/rerank/t2i/meanr"} <= want.keys()
    assert metrics.keys() == want.keys()
    for key, value in want.items():
        assert metrics[key] == pytest.approx(value, abs=1e-4), key


def _padded_lengths_on_two_ranks(tmp_path) -> tuple[dict[int, list[int]], dict]:
    """The fusion job's padded caption length at each step on rank 0 and rank 1 of 2: its
    datamodule's own training loader (sampler, dataset, tokenizer, collate) as each rank builds it;
    and the model's weights before training."""
    from types import SimpleNamespace

    from vlr.build import build_data_and_model

    cfg = compose_config(*FUSION, run_dir=tmp_path / "lengths", root=tmp_path)
    datamodule, model = build_data_and_model(cfg)
    lengths = {}
    for rank in (0, 1):
        datamodule.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        datamodule.setup("fit")
        lengths[rank] = [batch["input_ids"].shape[1] for batch in datamodule.train_dataloader()]
    assert len(lengths[0]) == len(lengths[1]) == 3
    return lengths, model.state_dict()


def _initial_weights(tmp_path) -> dict:
    """The weights before training: the same config and seed, built in this process."""
    import lightning.pytorch as pl

    from vlr.build import build_data_and_model

    cfg = compose_config(*ARGS, "seed=5", run_dir=tmp_path / "initial", root=tmp_path)
    pl.seed_everything(cfg.seed)
    return build_data_and_model(cfg)[1].state_dict()


def _start(args: list[str], cwd: Path, name: str) -> subprocess.Popen:
    """``python -m args...`` in a fresh interpreter and a process group of its own (as
    `tests.conftest.run_cli` runs it), its output to ``<cwd>/<name>.log``: a file, not a pipe
    nobody reads while this process trains."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLR_ROOT": str(cwd)}
    env.pop("WANDB_SERVICE", None)
    with open(cwd / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _finish(proc: subprocess.Popen, cwd: Path, name: str) -> None:
    try:
        proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} still running after {WAIT} s:\n{(cwd / f'{name}.log').read_text()[-3000:]}")
    assert proc.returncode == 0, (name, (cwd / f"{name}.log").read_text()[-3000:])


def _stop(proc: subprocess.Popen) -> None:
    """Nothing of a launch left running: SIGTERM to its process group (Lightning's ranks; torchrun's
    agent, which then stops its worker, started in a session of its own, within 30 s), SIGKILL to
    what is still there a minute later."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
