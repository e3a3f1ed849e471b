"""How far 1-process and 2-process (DDP, gloo) training drift apart, in float32 and float64.

    python -m experiments.ddp_drift [objective=sad objective.distance=mse ...]

Trains the same config twice per precision (one process, then ``trainer=ddp_cpu``) for 15
SGD steps (lr 0.5, momentum 0.9; no shuffling, augmentation or dropout, so both runs see
the same numbers) and prints the largest weight difference and where it is. A bug in the
distributed code shows at any precision; rounding amplified by the loss shrinks by about
float64/float32 epsilon (1e-9) when the runs are repeated in float64.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch

# the same numbers on 1 and 2 processes: no shuffling, augmentation or dropout; SGD with momentum
# (tests/test_ddp_exactness.py runs these too, on fewer images)
DETERMINISTIC = [
    "data.num_val=15",
    "data.num_test=15",
    "data.batch_size=20",
    "data.shuffle=false",
    "data.augment=false",
    "data.num_workers=0",
    "trainer.max_epochs=1",
    "model.text_tower.config.hidden_dropout_prob=0",
    "model.text_tower.config.attention_probs_dropout_prob=0",
    "logger=csv",
    "seed=5",
    "model.optimizer._target_=torch.optim.SGD",
    "model.optimizer.lr=0.5",
    "+model.optimizer.momentum=0.9",
]
COMMON = ["data.num_train=60", *DETERMINISTIC]  # 300 captions / batch 20: 15 steps


def _weights(run_dir: Path, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "vlr.train", *COMMON, *overrides, f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def main(overrides: list[str]) -> None:
    overrides = overrides or ["objective=sad"]
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("32-true", "64-true"):
            extra = [*overrides, f"trainer.precision={precision}"]
            one = _weights(Path(tmp) / precision / "one", extra)
            two = _weights(Path(tmp) / precision / "two", [*extra, "trainer=ddp_cpu"])
            diff, key = max((float((one[k].double() - two[k].double()).abs().max()), k) for k in one)
            print(f"{' '.join(overrides)}  precision={precision}: max |1 process - 2 processes| = {diff:.2e} ({key})")


if __name__ == "__main__":
    main(sys.argv[1:])
