"""A normal (non-editable) install ships the Hydra configs: vlr-train composes them from site-packages."""

import os
import subprocess
import sys
import zipfile

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_the_wheel_carries_the_configs_and_the_entry_point_finds_them(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next(wheels.glob("vlr-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (
        "vlr/conf/train.yaml",
        "vlr/conf/eval.yaml",
        "vlr/conf/objective/sad.yaml",
        "vlr/conf/debug/fdr.yaml",
    ):
        assert config in names, config
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    env = {**os.environ, "PYTHONPATH": str(site), "VLR_ROOT": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "vlr.train", "objective=sad", "--cfg", "job"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )  # not the repository: only the installed copy
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "name: sad" in proc.stdout and "head_on: reference" in proc.stdout
    where = subprocess.run(
        [sys.executable, "-c", "import vlr; print(vlr.__file__)"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert where.stdout.startswith(str(site))
    # vlr.write_features imported alone (not after vlr.train, as in-process tests import it) resolves its config
    features = subprocess.run(
        [sys.executable, "-m", "vlr.write_features", "--cfg", "job", "--resolve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert features.returncode == 0, features.stderr[-2000:]
    assert "out_dir: " in features.stdout and "/features/vit_small_patch14_dinov2" in features.stdout
