"""Two processes in one run folder (issue 29): a second start refuses the folder in one line while
the first trains, and leaves the first's Hydra files as they were. In this process: the first
start is stopped inside its fit (its folder accepted, its files written), and its lock is then
recorded as another live process's, which is what a first run still training is to the second."""

import json
import socket

import pytest

from tests.conftest import Died, live_pid, run_main

ARGS = ["data.num_train=40", "data.num_val=10", "data.num_test=10", "data.batch_size=10", "data.num_workers=0",
        "trainer.max_epochs=50", "logger=csv", "test=false"]  # fmt: skip


def test_a_second_process_refuses_a_folder_in_use(tmp_path, monkeypatch):
    import lightning.pytorch as pl

    run_dir = tmp_path / "run"

    def trains_on(self, *args, **kwargs):
        raise Died

    with monkeypatch.context() as patch:
        patch.setattr(pl.Trainer, "fit", trains_on)
        with pytest.raises(Died):
            run_main("train", *ARGS, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    lock, first = run_dir / "run.lock", live_pid()
    lock.write_text(json.dumps({"pid": first, "host": socket.gethostname()}))
    hydra_config = (run_dir / ".hydra" / "config.yaml").read_text()
    assert "max_epochs: 50" in hydra_config and (run_dir / "run_config.yaml").is_file()

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
    assert [line for line in same.output.splitlines() if line.startswith("error: ")] == [
        f"error: {run_dir} is in use by process {first} on {socket.gethostname()} (lock {lock}); wait for it "
        f"to end, use another hydra.run.dir, or delete {lock} if that process is gone"
    ]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == hydra_config  # put back
    assert json.loads(lock.read_text())["pid"] == first  # the first's lock left alone
