"""`make venv CPU=1` installs CPU-only torch wheels (PyTorch's CPU index first, PyPI for the
rest); plain `make venv` asks no other index. Checked on the command make composes (`make -n`):
the index is not reachable from every machine the tests run on."""

import shutil
import subprocess

import pytest

from tests.conftest import REPO

CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple"


def _install_line(tmp_path, *args: str) -> str:
    proc = subprocess.run(
        ["make", "-n", "-B", "venv", f"VENV={tmp_path / 'venv'}", *args], capture_output=True, text=True, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if "pip install" in line and "-e '.[dev]'" in line]
    return line


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_cpu_1_installs_from_the_pytorch_cpu_index(tmp_path):
    assert f"pip install -q {CPU_INDEX} -e '.[dev]'" in _install_line(tmp_path, "CPU=1")
    assert "--index-url" not in _install_line(tmp_path) and "download.pytorch.org" not in _install_line(tmp_path)
