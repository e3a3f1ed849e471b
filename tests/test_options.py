"""One validation layer before any work starts: every bad option, input file or write ends the
command with one line naming the option, file or path (vlr.runs.options, vlr.io, the readers)."""

import json
import logging
import resource
import signal
import sys

import pytest
import torch

from tests.conftest import REPO, run_main, small_run
from tests.test_following_runs import compose_run
from vlr.callbacks import AtomicCheckpointIO
from vlr.data.karpathy import AnnotationError, load_json
from vlr.errors import ConfigError, report_user_errors
from vlr.io import SaveError
from vlr.runs.options import check_options, did_you_mean, unknown_key_message
from vlr.train import train


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.optimizer.lr=nan", "model.optimizer.lr must be a finite number > 0, got nan"),
        ("model.optimizer.lr=inf", "model.optimizer.lr must be a finite number > 0, got inf"),
        ("model.optimizer.lr=0", "model.optimizer.lr must be a finite number > 0, got 0"),
        ("model.optimizer.weight_decay=-0.1", "model.optimizer.weight_decay must be a finite number >= 0, got -0.1"),
        ("objective=sad", None),  # the control: a valid run passes
        ("+objective.weights.kd=inf", "objective.weights.kd must be a finite number, got inf"),
        ("objective.temperature=-inf", "objective.temperature must be a finite number, got -inf"),
        ("data.batch_size=abc", "data.batch_size must be a positive integer, got 'abc'"),
        ("data.batch_size=0", "data.batch_size must be a positive integer, got 0"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer >= -1, got 1.5"),
        ("data.shuffle=maybe", "data.shuffle must be true or false, got 'maybe'"),
        ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
        (
            "trainer.max_epochs=-1",
            "trainer.max_epochs=-1 trains forever: set trainer.max_steps or a positive trainer.max_epochs",
        ),
        ("trainer.max_epochs=-1 trainer.max_steps=3", None),  # a step limit ends it
    ],
)
def test_bad_options_are_named_before_anything_is_built(tmp_path, synthetic_root, override, message):
    overrides = small_run(synthetic_root, *override.split())
    if override == "+objective.weights.kd=inf":
        overrides = small_run(synthetic_root, "objective=sad", "objective.weights.kd=inf")
    cfg = compose_run(tmp_path / "run", *overrides)
    if message is None:
        check_options(cfg)
        return
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == message
    assert not (tmp_path / "run").exists()  # nothing was started


def test_an_image_size_the_tower_cannot_take_is_named_before_the_first_step(tmp_path, synthetic_root):
    cfg = compose_run(tmp_path / "run", *small_run(synthetic_root, "data.image_size=32"))
    with pytest.raises(ConfigError, match=r"^data\.image_size=32, but the image tower takes 64x64 images"):
        train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_missing_data_root_says_what_it_must_contain(tmp_path):
    missing = tmp_path / "flickr30k"
    cfg = compose_run(tmp_path / "run", "data=flickr30k", f"data.root={missing}", "logger=none")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value) == (
        f"data.root={missing}: no such folder; it must contain dataset_flickr30k.json, flickr30k-images/ (docs/data.md)"
    )


def test_a_user_error_is_printed_once_and_kept_in_the_log_file(tmp_path, capsys):
    log_file = tmp_path / "train.log"
    handler = logging.FileHandler(log_file)
    console = logging.StreamHandler(sys.stdout)  # Hydra's console handler
    root = logging.getLogger()
    root.addHandler(handler)
    root.addHandler(console)

    @report_user_errors
    def main():
        raise ConfigError("data.root=/x: no such folder")

    try:
        with pytest.raises(SystemExit) as ended:
            main()
    finally:
        root.removeHandler(handler)
        root.removeHandler(console)
        handler.close()
    out = capsys.readouterr()
    assert ended.value.code == 1
    assert (out.out + out.err).count("data.root=/x: no such folder") == 1
    assert out.err == "error: data.root=/x: no such folder\n"
    assert "ConfigError: data.root=/x: no such folder" in log_file.read_text()


def test_a_mistyped_key_gets_its_close_matches():
    assert unknown_key_message("train", ["data.batchsize=64", "objective=sad"]) == (
        "data.batchsize: no such option (did you mean `data.batch_size` or `data.eval_batch_size`?)"
    )
    # only our advice: Hydra's "+key" (adding the key) is the wrong fix for a typo
    assert "+" not in unknown_key_message("train", ["data.batchsize=64"])
    # the keys of the groups chosen on the same command line
    assert "`objective.lambda_init`" in unknown_key_message("train", ["objective=sad", "objective.lamda_init=1"])
    assert unknown_key_message("eval", ["ckpt_pth=x.ckpt"]).startswith(
        "ckpt_pth: no such option (did you mean `ckpt_path`?)"
    )
    assert unknown_key_message("train", ["data.batch_size=64", "+data.extra=1"]) is None
    assert unknown_key_message("train", ["-m", "seed=0,1", "data.bach_size=3"]).startswith("data.bach_size: no such")
    assert did_you_mean("zzz.qqq", ["data.batch_size"]) == ""


def test_a_mistyped_key_on_the_command_line_is_one_line(tmp_path):
    """Hydra's own command-line path (its composition error, not ours), run in-process."""
    run = run_main("train", "data.batchsize=64", cwd=tmp_path)
    assert run.returncode == 1
    assert run.output.strip().splitlines() == [
        "error: data.batchsize: no such option (did you mean `data.batch_size` or `data.eval_batch_size`?)"
    ]
    assert not (tmp_path / "outputs").exists()


def test_annotation_text_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "dataset_x.json"
    path.write_bytes(
        json.dumps({"images": [{"filename": "a.jpg", "sentences": [{"raw": "caf"}]}]}).encode()[:-10]
        + b'\xe9\xff"}]}]}'
    )
    with pytest.raises(AnnotationError, match=rf"^{path}: not UTF-8 text \(byte \d+: invalid continuation byte\)$"):
        load_json(path)
    path.write_text(json.dumps({"images": [{"sentences": [{"raw": "café"}]}]}), encoding="utf-8")
    assert load_json(path)["images"][0]["sentences"][0]["raw"] == "café"  # UTF-8 whatever the locale


def test_a_checkpoint_cut_short_by_a_file_size_limit_names_the_path(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(SaveError) as err:
            AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.zeros(100_000)}}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert str(err.value).startswith(
        f"cannot write checkpoint {path}: the write stopped short (a full disk or a file-size limit?)"
    )
    assert list(path.parent.iterdir()) == []  # no partial file left


def _presets():
    conf = REPO / "vlr" / "conf"
    groups = ["data", "model", "objective", "trainer", "imbalance", "reference", "experiment", "debug", "logger"]
    return [(g, p.stem) for g in groups for p in sorted((conf / g).glob("*.yaml"))]


@pytest.mark.parametrize("group, option", _presets())
def test_every_shipped_preset_passes_the_checks(tmp_path, group, option):
    """The schema refuses bad values, never a configuration vlr ships."""
    check_options(compose_run(tmp_path / "run", f"{group}={option}", f"data.root={tmp_path}"))


@pytest.mark.parametrize("preset", sorted(p.stem for p in (REPO / "vlr" / "conf" / "data").glob("*.yaml")))
def test_every_data_preset_takes_on_bad_sample_in_train_and_eval(preset):
    """``data.on_bad_sample=skip`` on ``vlr.eval`` of a checkpoint composes the eval's default data
    first (the run's is adopted later): every preset has the option, and images follow it."""
    from tests.conftest import compose_config

    for entry in ("train", "eval"):
        assert unknown_key_message(entry, [f"data={preset}", "data.on_bad_sample=skip"]) is None
        cfg = compose_config(f"data={preset}", "data.on_bad_sample=skip", name=entry)
        assert (cfg.data.on_bad_sample, cfg.data.on_bad_image) == ("skip", "skip")
    assert unknown_key_message("eval", ["ckpt_path=x.ckpt", "data.on_bad_sample=skip"]) is None
