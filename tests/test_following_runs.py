"""A run someone follows without a terminal (nohup, SLURM): one plain line per epoch, the run
folder announced at start, a closing line naming metrics.json and the best checkpoint, the
same lines in the run's log file (through the real CLI, stdout a pipe: tests/test_train_e2e.py);
``--help`` says what vlr is; a killed process's temp folders are cleaned when the next run starts."""

import logging
import re
from pathlib import Path

import pytest

from tests.conftest import dead_pid, job_config, live_pid, run_main, run_vlr, small_run
from vlr.train import train

EPOCH_LINE_ONE = re.compile(r"epoch 1/1  step 2  train/loss \d+\.\d+  val/rsum \d+\.\d+  elapsed")
EPOCH_LINE = re.compile(r"epoch (\d+)/2  step (\d+)  train/loss (\d+\.\d+)  val/rsum (\d+\.\d+)  elapsed \d+:\d\d:\d\d")


def compose_run(run_dir: Path, *overrides: str):
    return job_config(*overrides, run_dir=run_dir)


def _lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("vlr")]


def test_a_run_logs_each_epoch_its_folder_and_where_its_results_are(tmp_path, synthetic_root, caplog):
    run_dir = tmp_path / "run"
    cfg = compose_run(run_dir, *small_run(synthetic_root, "trainer.max_epochs=2", "+trainer.limit_train_batches=3"))
    with caplog.at_level(logging.INFO, logger="vlr"):
        _, metrics = train(cfg)
    lines = _lines(caplog)
    assert lines[0] == f"run folder: {run_dir.resolve()}" or f"run folder: {run_dir.resolve()}" in lines
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines if line.startswith("epoch ")]
    assert [m is not None for m in epochs] == [True, True], lines
    assert [(int(m[1]), int(m[2])) for m in epochs] == [(1, 3), (2, 6)]
    best_val = max(float(m[4]) for m in epochs)
    assert metrics["val/rsum"] == pytest.approx(best_val, abs=0.01)  # the best epoch's, as logged
    folder, best = run_dir.resolve(), run_dir.resolve() / "checkpoints" / "best.ckpt"
    assert lines[-1] == f"done: metrics {folder / 'metrics.json'}; best checkpoint {best}"
    assert (run_dir / "metrics.json").is_file() and (run_dir / "checkpoints" / "best.ckpt").is_file()


@pytest.mark.parametrize("entry", ["train", "eval"])
def test_help_says_what_vlr_is_with_example_commands(tmp_path, entry):
    """In process (the console scripts' own ``--help`` runs in tests/test_packaging.py)."""
    run = run_main(entry, "--help", cwd=tmp_path)
    assert run.returncode == 0, run.output[-2000:]
    assert "vision-language retrieval" in run.output
    assert len(re.findall(r"^  (?:python -m vlr\.|vlr-)\S+", run.output, re.M)) >= 5, run.output
    assert "Traceback" not in run.output


def test_redirected_output_has_no_progress_bar_frame_and_no_wandb_summary(tmp_path, synthetic_root, monkeypatch):
    """stdout is not a terminal (run_vlr's capture, as nohup or SLURM): the plain epoch lines
    only, no Rich bar frame, no W&B run summary/history block."""
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    run = run_vlr(
        "train",
        *small_run(synthetic_root, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "logger=wandb"),
        dir=tmp_path / "run",
    )
    assert run.returncode == 0, run.output[-3000:]
    assert len(EPOCH_LINE_ONE.findall(run.output)) == 1, run.output[-3000:]
    assert "Epoch 0" not in run.output and "it/s" not in run.output, run.output[-3000:]  # Rich's bar
    assert "Run summary" not in run.output and "Run history" not in run.output, run.output[-3000:]
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*")), "the W&B run itself is still written"


@pytest.mark.parametrize("entry", ["train", "eval"])
def test_the_final_table_is_in_the_runs_log_file(tmp_path, synthetic_root, entry):
    """The test table (and the chance table under it) in train.log / eval.log, as on the console."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    handler = logging.FileHandler(run_dir / f"{entry}.log")  # what Hydra's job logging installs
    logging.getLogger().addHandler(handler)
    try:
        extra = ("trainer.max_epochs=1", "+trainer.limit_train_batches=2") if entry == "train" else ()
        run = run_vlr(entry, *small_run(synthetic_root, *extra), dir=run_dir)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    assert run.returncode == 0, run.output[-3000:]
    text = (run_dir / f"{entry}.log").read_text()
    assert "test metrics" in text and "chance level (a constant model)" in text, text[-3000:]
    rows = [line for line in text.splitlines() if line.startswith("│ R@1 ")]
    assert len(rows) == 2, text[-3000:]  # the metrics, then chance
    cells = rows[0].strip("│ ").split("│")
    assert [float(c) for c in cells[1:3]] == [round(run.metrics[f"test/{d}/R@1"], 2) for d in ("i2t", "t2i")]
    assert text.count("test metrics") == 1  # once in the file


@pytest.mark.parametrize(
    "entry, says, other",
    [
        ("train", "Trains image and text towers", "vlr-eval ckpt_path"),
        ("eval", "Scores a checkpoint, or the towers as built (zero-shot)", "vlr-train -m"),
    ],
)
def test_each_entry_points_help_says_what_it_does_with_its_own_examples(tmp_path, entry, says, other):
    """``vlr-eval --help`` is about evaluating (not the training text), with eval commands."""
    run = run_main(entry, "--help", cwd=tmp_path)
    assert run.returncode == 0, run.output[-2000:]
    assert run.output.startswith(f"vlr-{entry} (python -m vlr.{entry}): vlr, vision-language retrieval"), run.output
    assert says in run.output
    examples = re.findall(r"^  (vlr-\w+) \S+", run.output, re.M)
    assert examples.count(f"vlr-{entry}") >= 5 and set(examples) == {f"vlr-{entry}"}, run.output
    assert other not in run.output
    assert not (tmp_path / "outputs").exists()


def test_a_run_removes_temp_folders_of_dead_processes_only(tmp_path, synthetic_root):
    import os
    import time

    from vlr.runs import Run

    data = tmp_path / "data"
    data.mkdir()
    root = data / "synthetic"
    root.symlink_to(synthetic_root, target_is_directory=True)
    tokenizers = tmp_path / "cache" / "tokenizers"
    tokenizers.mkdir(parents=True)
    dead, alive = dead_pid(), live_pid()
    hour_ago = time.time() - 3600
    made = {
        "dead synthetic": data / f"synthetic.tmp{dead}",
        "dead tokenizer": tokenizers / f"wordpiece-600-abc.tmp{dead}",
        "alive": data / f"synthetic.tmp{alive}",
        "recent": tokenizers / f"wordpiece-600-def.tmp{dead}",
    }
    for name, path in made.items():
        (path / "images").mkdir(parents=True)
        (path / "images" / "0.png").write_bytes(b"x")
        if name != "recent":
            os.utime(path, (hour_ago, hour_ago))
    cfg = compose_run(tmp_path / "run", *small_run(root), f"paths.cache_dir={tmp_path / 'cache'}")
    Run(cfg)
    assert {name: path.exists() for name, path in made.items()} == {
        "dead synthetic": False,
        "dead tokenizer": False,
        "alive": True,  # its process may still be building it
        "recent": True,  # a pid absent here may be building on another machine (a shared filesystem)
    }
    assert (synthetic_root / "dataset.json").is_file() or any(synthetic_root.iterdir())
