"""A run folder is one run (issue 29), in-process through `vlr.train.train`: a start with other
training settings is refused in one line before anything is written (Hydra's files put back),
unless allowed and recorded; ``resume=false`` moves the old run aside; a lock keeps a second
process out (stale locks taken over); checkpoints carry the run's configuration and a checksum
that every load verifies."""

import contextlib
import json
import os
import shutil
import socket

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import SYNTHETIC_ROOT_SPEC, dead_pid, live_pid
from tests.test_run_bookkeeping import compose_run
from vlr.errors import report_user_errors
from vlr.runs import CheckpointError, read_checkpoint
from vlr.runs.folder import RunConfigMismatch, resolved
from vlr.runs.lock import RunFolderInUse
from vlr.runs.run_log import RunLogHandler
from vlr.train import train

QUICK = ("trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "test=false")


def _cfg(run_dir, synthetic_root, *extra):
    base = [f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.batch_size=10", "data.num_workers=0"]
    return compose_run(run_dir, *base, "logger=csv", *QUICK, *extra)


def _train(run_dir, synthetic_root, *extra):
    return train(_cfg(run_dir, synthetic_root, *extra))


def _snapshot(run_dir):
    """Every file of the run folder with its bytes."""
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture()
def finished(tmp_path, synthetic_root):
    """A finished run whose folder also holds Hydra's files, as ``hydra.main`` writes them."""
    run_dir = tmp_path / "run"
    cfg = _cfg(run_dir, synthetic_root)
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run_dir / ".hydra" / "overrides.yaml").write_text("[]\n")
    train(cfg)
    return run_dir


def test_a_resume_with_other_training_settings_is_refused_before_anything_is_written(finished, synthetic_root):
    before = _snapshot(finished)
    # what Hydra writes for the refused start, before vlr runs
    (finished / ".hydra" / "config.yaml").write_text("objective:\n  name: triplet\n")
    (finished / ".hydra" / "overrides.yaml").write_text("- objective=triplet\n")
    with pytest.raises(RunConfigMismatch) as err:
        _train(finished, synthetic_root, "seed=5", "model.optimizer.lr=0.01", "data.batch_size=16")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{finished} holds a run of another configuration: 4 settings differ: ")
    # imbalance.seed follows seed: the resolved configuration is compared
    assert "data.batch_size (10 -> 16), imbalance.seed (0 -> 5), model.optimizer.lr (0.001 -> 0.01), seed (0 -> 5)" in (
        message
    )
    assert "resume_allow_changes=[data.batch_size,imbalance.seed,model.optimizer.lr,seed]" in message
    assert _snapshot(finished) == before  # Hydra's files put back; nothing else touched


def test_plumbing_may_change_on_resume(finished, synthetic_root):
    _train(finished, synthetic_root, "data.num_workers=1", "logger=none", "num_threads=1")  # no refusal


def test_an_allowed_change_resumes_and_is_recorded(finished, synthetic_root):
    _train(finished, synthetic_root, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]")
    record = OmegaConf.to_container(OmegaConf.load(finished / "config_changes.yaml"))
    assert len(record) == 1 and record[0]["changes"] == {"trainer.max_epochs": {"before": 1, "now": 2}}
    assert OmegaConf.load(finished / "run_config.yaml").trainer.max_epochs == 2
    assert read_checkpoint(finished / "checkpoints" / "last.ckpt")["global_step"] == 4  # it went on
    _train(finished, synthetic_root, "trainer.max_epochs=2")  # the folder's run is now the changed one


def test_every_checkpoint_carries_the_resolved_configuration(finished, synthetic_root):
    cfg = resolved(_cfg(finished, synthetic_root))
    for name in ("last.ckpt", "best.ckpt"):
        stored = read_checkpoint(finished / "checkpoints" / name)["vlr_config"]
        assert stored["model"] == cfg["model"] and stored["seed"] == 0 and stored["data"] == cfg["data"]
    assert OmegaConf.to_container(OmegaConf.load(finished / "run_config.yaml"))["model"] == cfg["model"]


def test_resume_false_moves_the_old_run_aside(finished, synthetic_root, caplog):
    old = _snapshot(finished)
    with caplog.at_level("WARNING", logger="vlr.runs.folder"):
        _train(finished, synthetic_root, "resume=false", "seed=1")  # another run: not refused, not resumed
    (aside,) = (finished / "replaced").iterdir()
    assert f"resume=false: the run already in {finished} was moved to {aside}" in caplog.text
    for name in ("checkpoints/last.ckpt", "checkpoints/best.ckpt", "csv/metrics.csv", "run_config.yaml"):
        assert (aside / name).read_bytes() == old[name]
    assert (aside / ".hydra" / "config.yaml").read_bytes() == old[".hydra/accepted/config.yaml"]
    new_rows = (finished / "csv" / "metrics.csv").read_text()
    assert new_rows != old["csv/metrics.csv"] and OmegaConf.load(finished / "run_config.yaml").seed == 1
    assert len([r for r in new_rows.splitlines()[1:] if r]) == len(old["csv/metrics.csv"].decode().splitlines()[1:])


# ---- the lock


def _lock(run_dir, pid, host=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname()}))


def test_a_folder_in_use_by_a_live_process_is_refused(tmp_path, synthetic_root):
    run_dir, holder = tmp_path / "run", live_pid()
    _lock(run_dir, holder)
    with pytest.raises(RunFolderInUse) as err:
        _train(run_dir, synthetic_root)
    assert str(err.value) == (
        f"{run_dir} is in use by process {holder} on {socket.gethostname()} (lock {run_dir / 'run.lock'}); "
        f"wait for it to end, use another hydra.run.dir, or delete {run_dir / 'run.lock'} if that process is gone"
    )
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.lock"]  # nothing of this start was written


def test_a_lock_of_another_host_is_refused(tmp_path, synthetic_root):
    _lock(tmp_path / "run", 1, host="elsewhere")
    with pytest.raises(RunFolderInUse, match="in use by process 1 on elsewhere"):
        _train(tmp_path / "run", synthetic_root)


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, synthetic_root, caplog):
    dead, run_dir = dead_pid(), tmp_path / "run"
    _lock(run_dir, dead)
    with caplog.at_level("WARNING", logger="vlr.runs.lock"):
        _train(run_dir, synthetic_root)
    assert f"process {dead} of {socket.gethostname()} is gone; taking over its run folder" in caplog.text
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and not (run_dir / "run.lock").exists()  # released


def test_the_lock_is_held_while_training_and_ddp_ranks_join_it(tmp_path, synthetic_root, monkeypatch):
    from lightning.pytorch.callbacks import Callback

    from vlr.runs import Run

    seen = []

    class Probe(Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(json.loads((tmp_path / "run" / "run.lock").read_text()))

    cfg = _cfg(tmp_path / "run", synthetic_root)
    import vlr.train as vt

    monkeypatch.setattr(vt, "instantiate_group", lambda group: [Probe()] if group is cfg.get("callbacks") else [])
    train(cfg)
    assert seen == [{"pid": os.getpid(), "host": socket.gethostname()}]
    # a DDP child (LOCAL_RANK > 0) joins the folder its rank 0 holds
    _lock(tmp_path / "run", live_pid())
    monkeypatch.setenv("LOCAL_RANK", "1")
    Run(_cfg(tmp_path / "run", synthetic_root)).close()  # no refusal
    assert json.loads((tmp_path / "run" / "run.lock").read_text())["pid"] == live_pid()  # left alone


# ---- checksums


def _damage(path, tensor, offset=0, length=64 * 1024, fill=b"\x00"):
    """Overwrite bytes of ``tensor``'s data inside the checkpoint file (stored uncompressed)."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0
    n = min(length, len(raw) - offset)
    data[at + offset : at + offset + n] = (fill * n)[:n]
    path.write_bytes(bytes(data))


def test_a_damaged_best_checkpoint_is_refused_naming_the_file(finished):
    best = finished / "checkpoints" / "best.ckpt"
    state = torch.load(best, weights_only=True)["state_dict"]
    name = max(state, key=lambda k: state[k].numel())  # the largest weight
    _damage(best, state[name], offset=16)
    torch.load(best, weights_only=True)  # it still unpickles: only the checksum can tell
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(best)
    assert str(err.value).startswith(f"{best} is damaged: its tensors do not match the SHA-256 written with them")
    assert "\n" not in str(err.value)


def test_a_resume_from_a_damaged_last_checkpoint_is_refused(finished, synthetic_root):
    last = finished / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)["optimizer_states"][0]["state"]
    exp_avg = max((s["exp_avg"] for s in state.values()), key=lambda t: t.numel())
    _damage(last, exp_avg, length=256, fill=b"\x7f")  # optimizer moments of ~1e38
    before = _snapshot(finished)
    with pytest.raises(CheckpointError, match=f"^resume.*{last}|^{last} is damaged"):
        _train(finished, synthetic_root, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]")
    after = _snapshot(finished)
    assert after["checkpoints/last.ckpt"] == before["checkpoints/last.ckpt"]
    assert after["csv/metrics.csv"] == before["csv/metrics.csv"]


def test_lightning_loads_verify_the_checksum_too(finished):
    from vlr.callbacks import AtomicCheckpointIO

    best = finished / "checkpoints" / "best.ckpt"
    assert AtomicCheckpointIO().load_checkpoint(best)["vlr_checkpoint_format"] == 2
    state = torch.load(best, weights_only=True)["state_dict"]
    _damage(best, state[next(iter(state))], length=4, fill=b"\x01")
    with pytest.raises(CheckpointError, match="is damaged"):
        AtomicCheckpointIO().load_checkpoint(best)


# ---- vlr.eval never writes into a training run


def _eval_cfg(out_dir, *overrides):
    from tests.conftest import job_config

    return job_config(*overrides, name="eval", run_dir=out_dir)


def test_eval_refuses_to_write_into_a_training_run(finished, synthetic_root):
    from vlr.eval import EvalOutputIsARun, evaluate

    before = _snapshot(finished)
    (finished / ".hydra" / "config.yaml").write_text("task_name: eval\n")  # what Hydra writes for vlr.eval
    best = finished / "checkpoints" / "best.ckpt"
    args = (f"ckpt_path={best}", f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC, "data.num_workers=0")
    with pytest.raises(EvalOutputIsARun) as err:
        evaluate(_eval_cfg(finished, *args))
    assert str(err.value).startswith(f"hydra.run.dir={finished} is a training run's folder (it holds run_config.yaml, ")
    assert "\n" not in str(err.value)
    assert _snapshot(finished) == before
    metrics = evaluate(_eval_cfg(finished.parent / "eval", *args))  # its own folder: evaluates
    assert "test/i2t/R@1" in metrics and (finished.parent / "eval" / "metrics.json").is_file()


# ---- a refused start writes nothing, its log lines included (B, F); a copied folder resumes (C);
# ---- resume=false moves the old log aside too (G)


@contextlib.contextmanager
def _run_log(run_dir, name="train.log"):
    """The run's log file as Hydra opens it for vlr (vlr/conf/train.yaml: `RunLogHandler`)."""
    import logging

    handler = RunLogHandler(str(run_dir / name))
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def test_train_and_eval_log_through_the_run_log_handler():
    from tests.conftest import compose_config

    for entry in ("train", "eval"):
        handlers = compose_config(name=entry).hydra.job_logging.handlers
        assert handlers.file["class"] == "vlr.runs.run_log.RunLogHandler", entry


def test_an_allowed_objective_change_whose_checkpoint_does_not_fit_writes_nothing(finished, synthetic_root):
    """Following the refusal's own advice (resume_allow_changes=[objective]): the checkpoint check
    still refuses it, and the run's config, Hydra's files and its log are as they were, so the
    run's best.ckpt can still be evaluated."""
    (finished / "train.log").write_text("[vlr][INFO] - the finished run's log\n")
    before = _snapshot(finished)
    (finished / ".hydra" / "config.yaml").write_text("objective:\n  name: triplet\n")  # what Hydra writes first
    with _run_log(finished), pytest.raises(SystemExit):
        report_user_errors(train)(
            _cfg(finished, synthetic_root, "objective=triplet", "resume_allow_changes=[objective]")
        )
    assert _snapshot(finished) == before
    best = finished / "checkpoints" / "best.ckpt"
    metrics = _evaluate(finished.parent / "eval", f"ckpt_path={best}", f"data.root={synthetic_root}")
    assert "test/i2t/R@1" in metrics


def test_a_refused_start_leaves_the_folder_byte_identical(finished, synthetic_root):
    (finished / "train.log").write_text("[vlr][INFO] - the finished run's log\n")
    before = _snapshot(finished)
    with _run_log(finished), pytest.raises(SystemExit):
        report_user_errors(train)(_cfg(finished, synthetic_root, "seed=5"))
    assert _snapshot(finished) == before


def test_an_accepted_start_logs_everything_it_kept(finished, synthetic_root):
    (finished / "train.log").write_text("[vlr][INFO] - the finished run's log\n")
    with _run_log(finished):
        _train(finished, synthetic_root, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]")
    text = (finished / "train.log").read_text()
    assert text.startswith("[vlr][INFO] - the finished run's log\n")
    # logged before the checks passed (kept), and after
    assert f"resuming from {finished / 'checkpoints' / 'last.ckpt'}" in text and "run folder: " in text


def test_a_refused_eval_writes_no_eval_log(finished, synthetic_root):
    from vlr.eval import evaluate

    before = _snapshot(finished)
    args = (f"ckpt_path={finished / 'checkpoints' / 'best.ckpt'}", f"data.root={synthetic_root}", *SYNTHETIC_ROOT_SPEC)
    with _run_log(finished, "eval.log"), pytest.raises(SystemExit):
        report_user_errors(evaluate)(_eval_cfg(finished, *args, "data.num_workers=0"))
    assert _snapshot(finished) == before and not (finished / "eval.log").exists()


def test_a_copied_run_folder_resumes(finished, synthetic_root, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy)
    _train(copy, synthetic_root, "trainer.max_epochs=2", "resume_allow_changes=[trainer.max_epochs]")  # not refused
    last = read_checkpoint(copy / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4
    (best,) = [state["best_model_path"] for name, state in last["callbacks"].items() if "ModelCheckpoint" in name]
    assert best == str(copy / "checkpoints" / "best.ckpt")  # its own, not the original folder's
    record = OmegaConf.to_container(OmegaConf.load(copy / "config_changes.yaml"))
    assert record[0]["changes"] == {"trainer.max_epochs": {"before": 1, "now": 2}}  # no path among them


def test_resume_false_moves_the_old_log_aside(finished, synthetic_root):
    (finished / "train.log").write_text("[vlr][INFO] - the finished run's log\n")
    with _run_log(finished):
        _train(finished, synthetic_root, "resume=false", "seed=1")
    (aside,) = (finished / "replaced").iterdir()
    assert (aside / "train.log").read_text() == "[vlr][INFO] - the finished run's log\n"
    new = (finished / "train.log").read_text()
    assert "the finished run's log" not in new and f"was moved to {aside}" in new


def _evaluate(out_dir, *overrides):
    from vlr.eval import evaluate

    return evaluate(_eval_cfg(out_dir, *overrides, *SYNTHETIC_ROOT_SPEC, "data.num_workers=0"))


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda d: d.__setitem__(slice(0, 4), bytes(4)), "it does not start with a zip header (not a file torch.save "
         "wrote, or its first bytes are damaged)"),
        (lambda d: d.__setitem__(slice(-22, None), bytes(22)), "its zip structure is damaged or truncated (File is "
         "not a zip file)"),
        (lambda d: d.__setitem__(slice(-200, -100), bytes(100)), "its zip structure is damaged or truncated (Bad "
         "magic number for central directory)"),
        (lambda d: d.__setitem__(slice(10, 30), bytes(20)), "its zip member ckpt/data.pkl is damaged (CRC mismatch)"),
    ],
    ids=["zip-magic", "end-record", "central-directory", "member-header"],
)  # fmt: skip
def test_a_damaged_zip_is_refused_in_one_whole_line(tmp_path, damage, reason):
    path = tmp_path / "ckpt.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
    data = bytearray(path.read_bytes())
    damage(data)
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    assert str(err.value) == f"ckpt_path={path} is not a readable checkpoint: {reason}"


def test_resume_false_starts_another_wandb_run(tmp_path, synthetic_root):
    """The folder's W&B id belongs to the run moved aside: a resumed start continues it, a
    ``resume=false`` start gets its own (written once the start is accepted)."""
    from vlr.runs.resume import WANDB_ID_FILE, pin_wandb_run

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / WANDB_ID_FILE).write_text("0ld0ld00\n")
    resumed = _cfg(run_dir, synthetic_root, "logger=wandb")
    assert pin_wandb_run(resumed) is None and resumed.logger.wandb.id == "0ld0ld00"
    again = _cfg(run_dir, synthetic_root, "logger=wandb", "resume=false")
    assert pin_wandb_run(again) == run_dir / WANDB_ID_FILE
    assert len(again.logger.wandb.id) == 8 and again.logger.wandb.id != "0ld0ld00"


def _recorded_before_the_option_existed(run_dir, cfg, *keys):
    """The folder as a run started before vlr had ``keys``: its record lacks them, and Hydra's
    files of its accepted start hold the command line it was started with."""
    from hydra.core.hydra_config import HydraConfig

    record = OmegaConf.load(run_dir / "run_config.yaml")
    for key in keys:
        parent, name = key.rsplit(".", 1)
        del OmegaConf.select(record, parent)[name]
    (run_dir / "run_config.yaml").write_text(OmegaConf.to_yaml(record))
    accepted = run_dir / ".hydra" / "accepted" / "overrides.yaml"
    accepted.write_text(OmegaConf.to_yaml(OmegaConf.create(list(HydraConfig.get().overrides.task))))


@pytest.mark.slow  # trains a run, then resumes it
def test_options_added_since_the_run_began_resume_at_their_defaults_and_are_recorded(finished, synthetic_root):
    cfg = _cfg(finished, synthetic_root)
    _recorded_before_the_option_existed(finished, cfg, "eval.rerank.itc_weight")
    train(cfg)  # the same command: accepted
    record = OmegaConf.to_container(OmegaConf.load(finished / "config_changes.yaml"))
    assert record[0]["changes"] == {"eval.rerank.itc_weight": {"before": "<unset>", "now": 0.0}}
    assert OmegaConf.load(finished / "run_config.yaml").eval.rerank.itc_weight == 0.0


@pytest.mark.slow  # trains a run, then resumes it
@pytest.mark.parametrize(
    ("extra", "refused"),
    [
        (("eval.rerank.itc_weight=1.0",), "eval.rerank.itc_weight ('<unset>' -> 1.0)"),  # set on this command line
        (("fusion=default",), ",model.fusion.layers,"),  # a new group choice sets it (listed, not shown)
    ],
)
def test_a_new_option_this_start_sets_is_still_refused(finished, synthetic_root, extra, refused):
    _recorded_before_the_option_existed(finished, _cfg(finished, synthetic_root), "eval.rerank.itc_weight")
    with pytest.raises(RunConfigMismatch) as err:
        _train(finished, synthetic_root, *extra)
    assert "holds a run of another configuration" in str(err.value) and refused in str(err.value)


@pytest.mark.slow  # trains a run, then resumes it
def test_without_the_earlier_command_line_no_new_option_is_admitted(finished, synthetic_root):
    cfg = _cfg(finished, synthetic_root)
    _recorded_before_the_option_existed(finished, cfg, "eval.rerank.itc_weight")
    (finished / ".hydra" / "accepted" / "overrides.yaml").unlink()
    with pytest.raises(RunConfigMismatch, match=r"1 settings differ: eval.rerank.itc_weight \('<unset>' -> 0.0\)"):
        train(cfg)


@pytest.mark.slow  # trains a run, then resumes it
def test_the_fusion_learning_rate_cannot_change_on_resume_even_when_allowed(tmp_path, synthetic_root):
    run_dir = tmp_path / "run"
    _train(run_dir, synthetic_root, "fusion=default")
    before = _snapshot(run_dir)
    with pytest.raises(RunConfigMismatch) as err:
        _train(run_dir, synthetic_root, "fusion=default", "model.fusion.lr_scale=4",
               "resume_allow_changes=[model.fusion.lr_scale]")  # fmt: skip
    assert str(err.value) == (
        f"{run_dir}: model.fusion.lr_scale cannot change when a run resumes (1.0 -> 4): it sets the optimizer's "
        "parameter groups and their rates, which the checkpoint's optimizer state holds; use another hydra.run.dir"
    )
    assert _snapshot(run_dir) == before
