"""``make bench``: every benchmark, side by side in one run; prints a table and writes latest.json.

Later benchmarks add a section here; each returns ``{"ratios", "figures", "notes"}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from experiments.bench import eval_bench, loader_bench, real_towers, train_bench

OUT = Path(__file__).resolve().parent / "latest.json"
SECTIONS = {
    "eval": lambda tmp: eval_bench.run(),
    "train": train_bench.run,
    "loader": loader_bench.run,
    "real_towers": real_towers.run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=sorted(SECTIONS), nargs="*", help="run only these sections")
    args = parser.parse_args()
    result = {"ratios": {}, "figures": {}, "notes": {}}
    if args.only and OUT.exists():  # refresh some sections, keep the others' last figures
        previous = json.loads(OUT.read_text())
        result = {key: dict(previous.get(key, {})) for key in result}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only or SECTIONS:
            part = SECTIONS[name](Path(tmp) / name)
            for key in result:
                result[key].update(part.get(key, {}))
    result["machine"] = {
        "cpus": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    table = Table(title=f"vlr bench -> {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in {**{f"ratio {k}": v for k, v in result["ratios"].items()}, **result["figures"]}.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


if __name__ == "__main__":
    main()
