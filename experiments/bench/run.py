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

from experiments.bench import eval_bench, loader_bench, real_towers, rerank_bench, shards_bench, train_bench

OUT = Path(__file__).resolve().parent / "latest.json"
# ratio -> (bound, inclusive): the targets the issues set; met or not is recorded and printed
TARGETS = {
    "eval_vs_vse_style": (1.0, False),
    "ties_vs_strict_count": (1.2, False),
    "framework_vs_bare": (1.10, True),
    "covlr_vs_infonce": (2.1, True),
    "covlr_projections_vs_infonce": (1.2, True),
    "relation_kd_vs_infonce": (1.15, True),
    "sad_vs_infonce": (1.3, True),
    "shards_vs_folder_loader_time": (1 / 0.9, True),  # shards read at >= 0.9x the folder's samples/s
    "shards_rss_100k_vs_10k": (1.10, True),  # resident memory flat in the split's size
}


def check_targets(ratios: dict) -> dict:
    out = {}
    for key, (bound, inclusive) in TARGETS.items():
        if key in ratios:
            value = ratios[key]
            out[key] = {
                "value": value,
                "target": f"{'<=' if inclusive else '<'} {bound}",
                "met": value <= bound if inclusive else value < bound,
            }
    return out


SECTIONS = {
    "eval": lambda tmp: eval_bench.run(),
    "train": train_bench.run,
    "loader": loader_bench.run,
    "real_towers": real_towers.run,
    "real_towers_memory": real_towers.run_memory,
    "shards": shards_bench.run,
    "rerank": lambda tmp: rerank_bench.run(),
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
    result["targets"] = check_targets(result["ratios"])
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
    missed = [f"{k} {t['value']:.3f} (target {t['target']})" for k, t in result["targets"].items() if not t["met"]]
    print("targets: all met" if not missed else "targets missed: " + "; ".join(missed))
    for key in ("real_towers_gpu",):
        if key in result["notes"]:
            print(f"{key}: {result['notes'][key]}")


if __name__ == "__main__":
    main()
