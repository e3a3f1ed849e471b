"""Shared fixtures. Nothing here reads ../shared or the network: data is generated."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "vlr-cache"))


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (60/20/20 images), generated once per session."""
    from vlr.data.synthetic import SyntheticSpec, generate_synthetic

    root = tmp_path_factory.mktemp("data") / "synthetic"
    generate_synthetic(root, SyntheticSpec(num_train=60, num_val=20, num_test=20, seed=3))
    return root


def run_cli(module: str, *overrides: str, cwd: Path, timeout: int = 600, env: dict | None = None):
    """Run ``python -m module overrides...`` as a user would; returns the CompletedProcess."""
    import subprocess

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "VLR_ROOT": str(cwd), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
