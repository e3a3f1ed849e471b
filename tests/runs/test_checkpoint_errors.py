"""A checkpoint that cannot be used is named in one line saying what is wrong with it, in words
of our own rather than torch's (vlr/runs/checkpoints.py)."""

import argparse
import zipfile

import pytest
import torch

from vlr.runs.checkpoints import CheckpointError, read_checkpoint, why_unreadable


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"^ckpt_path=.*none\.ckpt: no such checkpoint file$"):
        read_checkpoint(tmp_path / "none.ckpt")


def test_a_torch_file_that_is_not_a_lightning_checkpoint_is_named(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"layer.weight": torch.zeros(2)}, path)  # bare weights: no state_dict
    with pytest.raises(
        CheckpointError, match=r"weights\.pt is not a Lightning checkpoint of vlr \(it has no 'state_dict'\)"
    ):
        read_checkpoint(path, option="resume_from")


def test_objects_that_need_pickle_are_refused_as_such(tmp_path):
    path = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "extra": argparse.Namespace(a=1)}, path)  # a class, not plain data
    with pytest.raises(CheckpointError, match="holds objects that only a full unpickling would load"):
        read_checkpoint(path)


def test_a_damaged_zip_member_is_named(tmp_path):
    path = tmp_path / "flipped.ckpt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data/0", b"A" * 64)
    data = bytearray(path.read_bytes())
    data[data.index(b"A" * 64) + 10] ^= 0xFF  # one byte of the member, after its CRC was written
    path.write_bytes(bytes(data))
    assert why_unreadable(path, RuntimeError("x")) == "its zip member archive/data/0 is damaged (CRC mismatch)"


def test_a_file_that_cannot_be_opened_says_so(tmp_path):
    assert why_unreadable(tmp_path / "gone.ckpt", RuntimeError("x")) == (
        "it cannot be read (No such file or directory)"
    )
