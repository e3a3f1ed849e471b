"""Two real processes in one run folder (issue 29): the second refuses it in one line while the
first trains, and leaves the first's Hydra files as they were. A process boundary is what is
tested, so the first is a real process (slow); the others run in this one."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, run_main

pytestmark = pytest.mark.slow
ARGS = ["data.num_train=40", "data.num_val=10", "data.num_test=10", "data.batch_size=10", "data.num_workers=0",
        "trainer.max_epochs=50", "logger=csv", "test=false"]  # fmt: skip


def test_a_second_process_refuses_a_folder_in_use(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "vlr.train", *ARGS, f"hydra.run.dir={run_dir}"]
    first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (run_dir / "csv" / "hparams.yaml").exists():  # the first is past its checks and training
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.2)
        hydra_config = (run_dir / ".hydra" / "config.yaml").read_text()
        # the others in this process: the boundary that matters is the first one's
        second = run_main("train", *ARGS, "seed=4", f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert second.returncode == 1
        errors = [line for line in second.output.splitlines() if line.startswith("error: ")]
        assert errors == [
            f"error: {run_dir} holds a run of another configuration: 2 settings differ: imbalance.seed (0 -> 4), "
            "seed (0 -> 4); use another hydra.run.dir, or resume_allow_changes=[imbalance.seed,seed] "
            "to continue with them"
        ]
        same = run_main("train", *ARGS, f"hydra.run.dir={run_dir}", cwd=tmp_path)
        assert same.returncode == 1
        lock = run_dir / "run.lock"
        assert [line for line in same.output.splitlines() if line.startswith("error: ")] == [
            f"error: {run_dir} is in use by process {first.pid} on {os.uname().nodename} (lock {lock}); wait for it "
            f"to end, use another hydra.run.dir, or delete {lock} if that process is gone"
        ]
        assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_config  # put back
        assert first.poll() is None  # the first trains on
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
