"""The run folder's helpers at their edges: leftovers that cannot be read or removed, locks that
are damaged or raced for, and processes of another user (issue 29's lock, issue 30's leftovers)."""

import json
import logging
import os
import socket

import pytest

from tests.conftest import dead_pid
from vlr.runs import leftovers
from vlr.runs.leftovers import QUIET_S, clean_leftovers, dead_leftovers
from vlr.runs.lock import RunFolderInUse, RunLock


def _denied(pid, sig):
    raise PermissionError(1, "Operation not permitted")


def test_a_process_of_another_user_counts_as_alive(monkeypatch):
    monkeypatch.setattr(os, "kill", _denied)  # what kill(pid, 0) raises for another user's process
    assert leftovers.process_alive(12345) is True


def test_pid_zero_or_negative_is_no_process():
    assert leftovers.process_alive(0) is False and leftovers.process_alive(-3) is False


@pytest.mark.parametrize("pid", [0, -3])
def test_a_lock_naming_no_process_is_refused_as_of_an_unknown_one(tmp_path, pid):
    """Not a process id (0 is kill()'s whole group, a negative one a group): never taken over."""
    (tmp_path / "run.lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with pytest.raises(RunFolderInUse, match=r"^\S+ is in use by an unknown process \(lock "):
        RunLock(tmp_path).acquire()
    assert json.loads((tmp_path / "run.lock").read_text())["pid"] == pid


@pytest.mark.parametrize("pid", [0, -3])
def test_an_optuna_worker_recorded_without_a_process_is_gone(pid):
    from vlr.sweeps.callbacks import worker_alive

    assert worker_alive({"host": socket.gethostname(), "pid": pid}) is False
    assert worker_alive({"host": "another-host", "pid": pid}) is True  # another host's: not checkable


def test_a_leftover_that_cannot_be_removed_is_named_and_kept(tmp_path, monkeypatch, caplog):
    entry = tmp_path / f"synthetic.tmp{dead_pid()}"
    entry.mkdir()
    old = entry.stat().st_mtime - QUIET_S - 1
    os.utime(entry, (old, old))

    def refuse(path, *a, **k):
        raise OSError(13, "Permission denied")

    monkeypatch.setattr(leftovers.shutil, "rmtree", refuse)
    caplog.set_level(logging.WARNING, logger="vlr")
    assert clean_leftovers([tmp_path]) == []
    assert entry.exists()
    assert f"cannot remove the leftover {entry} of a killed process: [Errno 13] Permission denied" in caplog.text


def test_an_unreadable_folder_or_entry_has_no_leftovers(tmp_path, monkeypatch):
    assert dead_leftovers(tmp_path / "missing") == []
    entry = tmp_path / f"data.tmp{dead_pid()}"
    entry.write_text("x")
    real = type(entry).lstat

    def vanished(self, *a, **k):
        if self == entry:  # removed between the listing and the look at it
            raise FileNotFoundError(2, "No such file or directory")
        return real(self, *a, **k)

    monkeypatch.setattr(type(entry), "lstat", vanished)
    assert dead_leftovers(tmp_path, now=entry.stat().st_mtime + QUIET_S + 1) == []


def test_a_damaged_lock_is_held_by_an_unknown_process(tmp_path):
    (tmp_path / "run.lock").write_text("{not json")
    with pytest.raises(RunFolderInUse, match=r"is in use by an unknown process \(lock .*run\.lock\)"):
        RunLock(tmp_path).acquire()
    (tmp_path / "run.lock").write_text("[1, 2]\n")  # valid JSON, not a holder
    with pytest.raises(RunFolderInUse, match="in use by an unknown process"):
        RunLock(tmp_path).acquire()


def test_a_lock_released_while_we_looked_is_taken(tmp_path, monkeypatch):
    path = tmp_path / "run.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    seen = []

    def released(self):
        seen.append(1)
        path.unlink()  # its holder released it between our failed create and our read
        return None

    monkeypatch.setattr(RunLock, "_holder", released)
    held = RunLock(tmp_path)
    held.acquire()
    try:
        assert seen == [1] and held.held
        assert json.loads(path.read_text()) == {"pid": os.getpid(), "host": socket.gethostname()}
    finally:
        monkeypatch.undo()
        held.release()
    assert not path.exists()


def test_a_lock_that_keeps_changing_hands_is_given_up_with_one_line(tmp_path, monkeypatch):
    (tmp_path / "run.lock").write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    monkeypatch.setattr(RunLock, "_holder", lambda self: None)  # always released, always back
    with pytest.raises(RunFolderInUse, match=r"could not take .*run\.lock \(other processes race for it\)"):
        RunLock(tmp_path).acquire()
