"""Atomic writes when the filesystem or the writer fails, and what a run prints to a terminal
versus a file (vlr/io.py, vlr/tracking/console.py)."""

import os
import sys

import pytest

from vlr import io as vlr_io
from vlr.io import SaveError, atomic_write
from vlr.tracking import console


def _left(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_writer_interrupted_by_anything_leaves_nothing_and_the_old_file_intact(tmp_path):
    target = tmp_path / "best.ckpt"
    target.write_bytes(b"old")

    def interrupted(fh):
        fh.write(b"half")
        raise KeyboardInterrupt  # not an OSError: passed on as it is

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted, "checkpoint")
    assert _left(tmp_path) == ["best.ckpt"] and target.read_bytes() == b"old"


def test_a_torch_error_without_a_message_is_named_by_its_type(tmp_path):
    def fails(fh):
        raise RuntimeError("")

    with pytest.raises(SaveError, match=r"^cannot write checkpoint .*x\.ckpt: RuntimeError$"):
        atomic_write(tmp_path / "x.ckpt", fails, "checkpoint")
    assert _left(tmp_path) == []


@pytest.mark.parametrize("fails", ["open", "fsync"])
def test_a_folder_that_cannot_be_synced_still_gets_the_file(tmp_path, monkeypatch, fails):
    """Some filesystems cannot open or fsync a directory; the rename is atomic all the same."""
    real_open, real_fsync = os.open, os.fsync
    folder = str(tmp_path)

    def open_(path, flags, *a, **k):
        if fails == "open" and str(path) == folder:
            raise PermissionError(13, "Permission denied")
        return real_open(path, flags, *a, **k)

    def fsync_(fd):
        if fails == "fsync" and os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(22, "Invalid argument")
        return real_fsync(fd)

    monkeypatch.setattr(vlr_io.os, "open", open_)
    monkeypatch.setattr(vlr_io.os, "fsync", fsync_)
    assert atomic_write(tmp_path / "a.bin", lambda fh: fh.write(b"123")) == tmp_path / "a.bin"
    assert (tmp_path / "a.bin").read_bytes() == b"123" and _left(tmp_path) == ["a.bin"]


class _Terminal:
    def isatty(self):
        return True

    def write(self, text):
        return len(text)

    def flush(self):
        pass


def test_a_stream_without_isatty_or_closed_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, "stdout", object())
    assert console.interactive() is False
    closed = open(os.devnull, "w")
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)  # isatty raises ValueError on a closed file
    assert console.interactive() is False


def test_a_terminal_keeps_the_progress_bar_and_wandb_settings(monkeypatch):
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.setattr(sys, "stdout", _Terminal())
    options, bar = {}, RichProgressBar()
    assert console.plain_when_redirected(options, [bar]) == [bar] and options == {}
    given = {"console": "off"}
    assert console.wandb_settings(given) is given


def test_a_redirected_run_asks_wandb_to_be_quiet_whatever_settings_were_given(monkeypatch):
    import wandb
    from lightning.pytorch.callbacks import RichProgressBar

    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))
    options, bar = {}, RichProgressBar()
    assert console.plain_when_redirected(options, [bar, "other"]) == ["other"]
    assert options == {"enable_progress_bar": False}
    assert console.wandb_settings().quiet is True
    assert console.wandb_settings({"console": "off"}) == {"quiet": True, "console": "off"}
    settings = console.wandb_settings(wandb.Settings(console="off"))
    assert settings.quiet is True and settings.console == "off"
