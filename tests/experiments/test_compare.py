"""experiments/compare.py: run directories -> cells -> mean ± std tables, verdict and plot."""

import json
import statistics

import yaml

from experiments.compare import cells_from_dirs, difference, report, summarize, verdict, write_outputs


def _cell(objective, strength, seed, rsum, single):
    return {
        "objective": objective,
        "imbalance": "text_weak",
        "strength": strength,
        "seed": seed,
        "command": "x",
        "metrics": {"test/rsum": rsum, "test/rsum_single": single},
    }


def test_summary_difference_and_verdict():
    cells = [_cell("infonce", 0.5, s, r, q) for s, (r, q) in enumerate([(100, 200), (104, 202), (102, 198)])]
    cells += [_cell("covlr", 0.5, s, r, q) for s, (r, q) in enumerate([(101, 230), (103, 232), (102, 228)])]
    cells += [_cell("sad", 0.5, s, r, q) for s, (r, q) in enumerate([(60, 240), (62, 242), (61, 238)])]
    summary = summarize(cells)
    mean, std, n = summary[("infonce", "text_weak", 0.5)]["rsum_single"]
    assert (mean, n) == (200, 3) and std == statistics.stdev([200, 202, 198])
    d, se = difference(summary, ("covlr", "text_weak", 0.5), ("infonce", "text_weak", 0.5), "rsum_single")
    assert d == 30 and abs(se - (2 * 4 / 3) ** 0.5) < 1e-9
    lines = verdict(summary).splitlines()
    assert "covlr vs infonce" in lines[0] and lines[0].endswith("**yes**")
    assert "sad vs infonce" in lines[1] and lines[1].endswith("**no: it costs cross-modal retrieval**")


def test_run_directories_to_report_files(tmp_path):
    for i, (objective, rsum) in enumerate([("infonce", 100.0), ("covlr", 110.0)]):
        run = tmp_path / "multirun" / str(i)
        (run / ".hydra").mkdir(parents=True)
        (run / ".hydra" / "config.yaml").write_text(
            yaml.safe_dump(
                {"objective": {"name": objective}, "imbalance": {"name": "none", "strength": 0.0}, "seed": 0}
            )
        )
        (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"objective={objective}"]))
        (run / "metrics.json").write_text(json.dumps({"test/rsum": rsum, "test/rsum_single": 50.0}))
    cells = cells_from_dirs([tmp_path / "multirun"])
    assert [c["command"] for c in cells] == [
        "python -m vlr.train objective=infonce",
        "python -m vlr.train objective=covlr",
    ]
    write_outputs(cells, tmp_path / "out", "T")
    assert json.loads((tmp_path / "out" / "results.json").read_text())["cells"] == cells
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| none | 0 | covlr | 1 | – | – | 110.00 ± 0.00 |" in text and text == report(cells, "T")
    assert (tmp_path / "out" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
