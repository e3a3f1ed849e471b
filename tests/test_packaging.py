"""vlr as users install it: the console scripts `vlr-train` and `vlr-eval` after an editable
install (`make venv`: ``--help``) and after a wheel install (``--help``, then a training run and an
evaluation of its checkpoint), run from a folder that is not the repository. The wheel also
carries the Hydra configs."""

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO, SYNTHETIC_ROOT_SPEC

pytestmark = pytest.mark.slow


def _venv_on_these_dependencies(folder: Path) -> Path:
    """A fresh virtual environment holding this interpreter's installed dependencies (torch,
    Lightning, Hydra: linked, nothing downloaded) but not its vlr; returns its bin folder. Links,
    not a path file: pip must not see (nor touch) the vlr installed beside them."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next(folder.glob("lib/python*/site-packages"))
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(("vlr", "__editable__")) and not (site / entry.name).exists():
            (site / entry.name).symlink_to(entry)
    return folder / "bin"


def _pip_install(bin_dir: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(bin_dir / "python"), "install", "-q", "--no-deps", *args],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},  # a tree's egg-info there reads as installed
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _wheel(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    return next(wheels.glob("vlr-*.whl"))


def _check_wheel_contents(wheel_path: Path) -> None:
    wheel = zipfile.ZipFile(wheel_path)
    names = set(wheel.namelist())
    metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    extras = {line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Provides-Extra:")}
    assert {"loggers", "optuna", "cluster", "shards", "dev"} <= extras  # pip install '.[shards]' works
    for config in (
        "vlr/conf/__init__.py",
        "vlr/conf/train.yaml",
        "vlr/conf/eval.yaml",
        "vlr/conf/objective/sad.yaml",
        "vlr/conf/debug/fdr.yaml",
        "vlr/conf/hydra/default.yaml",
    ):
        assert config in names, config


def test_the_wheel_and_the_editable_install_give_working_console_scripts(tmp_path, synthetic_root):
    """The suite's one test of the install path: a wheel (its contents, then its console scripts
    train and evaluate) and an editable install (`make venv`: its console scripts run this tree)."""
    wheel = _wheel(tmp_path)
    _check_wheel_contents(wheel)
    installs = {"wheel": str(wheel), "editable": str(REPO)}
    for install, target in installs.items():
        bin_dir = _venv_on_these_dependencies(tmp_path / install / "venv")
        if install == "editable":
            _pip_install(bin_dir, "--no-build-isolation", "-e", target)
        else:
            _pip_install(bin_dir, target)
        _check_console_scripts(tmp_path / install, bin_dir, synthetic_root, install)


def _check_console_scripts(tmp_path: Path, bin_dir: Path, synthetic_root: Path, install: str) -> None:
    work = tmp_path / "work"  # not the repository: only the installed vlr
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(VLR_ROOT=str(work), PYTHONUNBUFFERED="1")

    def script(name: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(bin_dir / name), *args], capture_output=True, text=True, cwd=work, env=env, timeout=600
        )

    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import vlr; print(vlr.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=work,
    )
    expected = REPO if install == "editable" else tmp_path / "venv"
    assert where.stdout.startswith(str(expected)), where.stdout + where.stderr
    for name, example in (("vlr-train", "vlr-train experiment=smoke"), ("vlr-eval", "vlr-eval ckpt_path=")):
        helped = script(name, "--help")
        assert helped.returncode == 0 and "Traceback" not in helped.stderr, helped.stderr[-2000:]
        assert "vision-language retrieval" in helped.stdout and example in helped.stdout
    if install == "editable":  # the same entry points: the wheel's install trains and evaluates
        return
    # vlr.write_features imported alone (not after vlr.train, as in-process tests import it) resolves its config
    features = subprocess.run(
        [str(bin_dir / "python"), "-m", "vlr.write_features", "--cfg", "job", "--resolve"],
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
    )
    assert features.returncode == 0, features.stderr[-2000:]
    assert "out_dir: " in features.stdout and "/features/vit_small_patch14_dinov2" in features.stdout
    run_dir = work / "run"
    trained = script(
        "vlr-train",
        "debug=limit",
        "trainer.max_epochs=1",
        f"data.root={synthetic_root}",
        *SYNTHETIC_ROOT_SPEC,
        "data.batch_size=10",
        f"hydra.run.dir={run_dir}",
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    tested = json.loads((run_dir / "metrics.json").read_text())
    evaluated = script(
        "vlr-eval", f"ckpt_path={run_dir / 'checkpoints' / 'best.ckpt'}", f"hydra.run.dir={work / 'eval'}"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    again = json.loads((work / "eval" / "metrics.json").read_text())
    assert again["test/rsum"] == pytest.approx(tested["test/rsum"])  # the same checkpoint on the same split
