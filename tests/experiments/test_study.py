"""experiments/imbalance: the study's verdict rules, its analysis and report from cells, and a tiny
study run end to end through its CLI, once (plumbing: the real study's sizes are in the preset)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.imbalance.analysis import analyse
from experiments.imbalance.report import write_report
from experiments.paired import MARGIN, status
from tests.experiments.test_compare import _rankings_file

REPO = Path(__file__).resolve().parents[2]


def _ci(d, lo, hi):
    return {"difference": d, "low": lo, "high": hi}


@pytest.mark.parametrize(
    "single, cross, expected",
    [
        (_ci(3, 1, 5), _ci(0.5, -1.9, 1.9), ("up", "equivalent", "reproduces")),
        (_ci(3, 1, 5), _ci(9, 4, 14), ("up", "gain", "reproduces")),
        (_ci(3, 1, 5), _ci(-9, -14, -4), ("up", "cost", "does not reproduce")),
        (_ci(3, 1, 5), _ci(-1, -3, 1), ("up", "not resolved", "not resolved")),  # a cost beyond 2 not excluded
        (_ci(-3, -5, -1), _ci(0, -1, 1), ("down", "equivalent", "does not reproduce")),
        (_ci(1, -1, 3), _ci(0, -1, 1), ("not resolved", "equivalent", "not resolved")),
        (_ci(3, 1, 5), _ci(-1, -1.5, -0.5), ("up", "equivalent", "reproduces")),  # resolved, but inside the margin
    ],
)
def test_the_verdict_rules(single, cross, expected):
    assert MARGIN == 2.0
    assert tuple(status(single, cross).values()) == expected


def _cell(tmp_path, arm, imbalance, strength, seed, i2t, ndcg, g=0):
    run_dir = tmp_path / "runs" / f"{arm}-{imbalance}-{strength}-{g}-{seed}"
    run_dir.mkdir(parents=True)
    _rankings_file(run_dir / "rankings.safetensors", 20, i2t, 0.5, ndcg)
    test = {"rsum": 300 * i2t + 150.0, "i2i/NDCG@10": 100 * ndcg, "t2t/NDCG@10": 100 * ndcg, "i2i/R@1": 10.0}
    return {
        "arm": arm,
        "imbalance": imbalance,
        "strength": strength,
        "generator_seed": g,
        "seed": seed,
        "command": f"python -m vlr.train objective={arm} seed={seed}",
        "run_dir": str(run_dir.relative_to(tmp_path)),
        "test": test,
        "val": {},
        "chance": {"rsum": 15.0, "i2i/NDCG@10": 40.0, "t2t/NDCG@10": 30.0},
    }


def test_analysis_and_report_from_cells(tmp_path):
    cells = []
    for g in (0, 1):
        for seed in (0, 1, 2):
            cells.append(_cell(tmp_path, "infonce", "none", 0.0, seed, 0.5, 0.5, g))
            cells.append(_cell(tmp_path, "infonce", "text_weak", 1.0, seed, 0.4, 0.4, g))
            cells.append(_cell(tmp_path, "relation_kd", "none", 0.0, seed, 0.5, 0.55, g))
            cells.append(_cell(tmp_path, "relation_kd", "text_weak", 1.0, seed, 0.4, 0.45, g))
            # covlr: +0.1 NDCG per direction over relation_kd at strength 1, 15 rsum points lower
            cells.append(_cell(tmp_path, "covlr", "none", 0.0, seed, 0.5, 0.55, g))
            cells.append(_cell(tmp_path, "covlr", "text_weak", 1.0, seed, 0.35, 0.55, g))
    results = analyse(cells, tmp_path)
    by = {(c["direction"], c["strength"], c["arm"], c["baseline"]): c for c in results["comparisons"]}
    kd = by[("text_weak", 1.0, "relation_kd", "infonce")]
    assert len(kd["pairs"]) == 6 and kd["ndcg_single@10"]["difference"] == pytest.approx(10.0)
    assert (kd["single"], kd["cross"], kd["claim"]) == ("up", "equivalent", "reproduces")
    covlr = by[("text_weak", 1.0, "covlr", "infonce")]
    assert covlr["rsum"]["difference"] == pytest.approx(-15.0) and covlr["claim"] == "does not reproduce"
    meta = by[("text_weak", 1.0, "covlr", "relation_kd")]
    assert meta["ndcg_single@10"]["difference"] == pytest.approx(20.0) and meta["cross"] == "cost"
    assert by[("text_weak", 0.0, "covlr", "infonce")]["pairs"] == kd["pairs"]  # the balanced data, same pairs
    summary = {(r["strength"], r["arm"]): r for r in results["summary"]}
    assert summary[(1.0, "infonce")]["metrics"]["rsum"] == {"mean": pytest.approx(270.0), "sd": 0.0, "n": 6}
    assert results["chance"]["0"]["ndcg_single@10"] == 70.0

    results.update(
        design={
            "arms": ["infonce", "relation_kd", "covlr"],
            "directions": ["text_weak"],
            "strengths": [0.0, 1.0],
            "seeds": [0, 1, 2],
            "generator_seeds": [0, 1],
            "overrides": ["experiment=imbalance_study"],
        },
        reference_alone={
            "0": {
                "i2i/NDCG@10": 70.0,
                "t2t/NDCG@10": 90.0,
                "i2i/R@1": 20.0,
                "t2t/R@1": 95.0,
                "duplicate_captions/test": 0.5,
                "duplicate_captions/train": 0.25,
            }
        },
        tuning={
            "criterion": "mean over seeds of val/rsum + val/i2i/NDCG@10 + val/t2t/NDCG@10",
            "generator_seed": 0,
            "seeds": [0, 1],
            "grid": [1.0, 0.1],
            "factor_means": {"covlr": "objective.beta (default 1)", "sad": "not in this study"},
            "arms": {
                "covlr": {
                    "rows": [
                        {"factor": 1.0, "val_score": 210.0, "val_score_per_seed": [200.0, 220.0]},
                        {"factor": 0.1, "val_score": 230.5, "val_score_per_seed": [230.0, 231.0]},
                    ],
                    "chosen": 0.1,
                    "at_edge": True,
                    "overrides": ["objective.beta=0.1"],
                }
            },
        },
        reproduced={"command": "python -m vlr.train x", "equal": True, "differing": []},
        duration_s=600,
        command="make study",
        cells=cells,
    )
    out = tmp_path / "out"
    out.mkdir()
    write_report(results, out)
    text = (out / "report.md").read_text()
    assert (
        "| text_weak | 1 | relation_kd | 6 | +10.00 [+10.00, +10.00] [+10.00, +10.00] "
        "| +0.00 [+0.00, +0.00] [+0.00, +0.00] "
        "| up | equivalent " in text
    )
    assert "- **relation_kd** against infonce, text_weak: the claim reproduces at strength 0, 1." in text
    assert (
        "- **covlr** against infonce, text_weak: the claim reproduces at strength 0; does not reproduce at strength 1"
        in text
    )
    assert "the meta step adds nothing resolved beyond relation_kd" in text
    assert "| reference alone, generator seed 0 | 70.0 | 90.0 | 20.0 | 95.0 |" in text
    assert (
        "Captions whose text another image of the same split also has: generator seed 0: test 0.50%, train 0.25%."
        in text
    )
    assert (
        "| covlr | 210.0 (200, 220) | 230.5 (230, 231) | x0.1 (grid edge) |" in text
        and "- covlr: objective.beta (default 1)" in text
    )
    assert "not in this study" not in text  # only the tuned arms' factors are explained
    assert "Re-running `python -m vlr.train x` alone gave the same test metrics." in text
    for name in ("tradeoff.png", "difference_text_weak.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG" and f"]({name})" in text


@pytest.mark.slow
def test_a_tiny_study_runs_end_to_end_and_its_cells_rerun_alone(tmp_path):
    tiny = [
        "data.num_train=30",
        "data.num_val=10",
        "data.num_test=10",
        "data.batch_size=10",
        "data.eval_batch_size=10",
        "data.reference_images=64",
        "reference.image_epochs=1",
        "reference.text_epochs=1",
        "trainer.max_epochs=1",
    ]
    cmd = [sys.executable, "-m", "experiments.imbalance.study", "--runs", str(tmp_path / "runs")]
    cmd += ["--out", str(tmp_path / "out"), "--seeds", "0", "1", "--generator-seeds", "0", "--strengths", "0", "1"]
    cmd += ["--directions", "text_weak", "--arms", "infonce", "covlr", "--grid", "1", "0.1"]
    base, cmd = cmd, [*cmd, "--wandb", "vlr", "--override", *tiny]
    env = {**os.environ, "VLR_ROOT": str(tmp_path), "WANDB_MODE": "offline", "WANDB_DATA_DIR": str(tmp_path / "wd")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results["cells"]) == 2 * 2 * 2  # arms x levels x seeds
    assert [r["factor"] for r in results["tuning"]["arms"]["covlr"]["rows"]] == [1.0, 0.1]
    chosen = results["tuning"]["arms"]["covlr"]["chosen"]
    assert all(f"objective.beta={chosen:g}" in c["command"] for c in results["cells"] if c["arm"] == "covlr")
    assert results["reproduced"]["equal"] is True  # a multirun job's recorded command, re-run alone
    assert set(results["reference_alone"]["0"]) >= {"i2i/NDCG@10", "t2t/NDCG@10", "i2i/R@1", "t2t/R@1"}
    for cell in results["cells"]:
        metrics = json.loads((Path(cell["run_dir"]) / "metrics.json").read_text())
        assert cell["test"]["rsum"] == metrics["test/rsum"]
        assert (Path(cell["run_dir"]) / "rankings.safetensors").is_file()
        assert f"hydra.run.dir={cell['run_dir']}" in cell["command"] and "data.generator_seed=0" in cell["command"]
    assert {(c["arm"], c["baseline"], c["strength"]) for c in results["comparisons"]} == {
        ("covlr", "infonce", 0.0),
        ("covlr", "infonce", 1.0),
    }
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "difference_text_weak.png").is_file()
    assert results["command"].startswith("python -m experiments.imbalance.study --runs ")
    from vlr.tracking.wandb_files import read_run

    [logged] = [read_run(f) for f in (tmp_path / "runs" / "wandb").glob("offline-run-*")]
    assert logged.job_type == "compare" and logged.name == "imbalance-study"
    assert {"tradeoff/_type", "difference_text_weak/_type", "verdicts/_type"} <= set(logged.history[0])
    # run again: every cell is finished, nothing is trained again
    stamps = {c["run_dir"]: (Path(c["run_dir"]) / "metrics.json").stat().st_mtime_ns for c in results["cells"]}
    again = subprocess.run(
        [*base, "--wandb", "", "--no-reproduce", "--override", *tiny],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "  s  " not in again.stdout  # no block ran
    assert stamps == {d: (Path(d) / "metrics.json").stat().st_mtime_ns for d in stamps}


def test_verdicts_use_the_bonferroni_level_of_all_distinct_comparisons(tmp_path):
    from experiments.imbalance.analysis import family_level

    cells = []
    for seed in (0, 1, 2):
        for arm, i2t in (("infonce", 0.5), ("relation_kd", 0.52), ("covlr", 0.5)):
            for imbalance, strength in (("none", 0.0), ("text_weak", 1.0)):
                cells.append(_cell(tmp_path, arm, imbalance, strength, seed, i2t, 0.5 + 0.01 * seed))
    pairs = [("relation_kd", "infonce"), ("covlr", "infonce"), ("covlr", "relation_kd")]
    # 3 comparisons x 2 levels (strength 0 shared by the directions), each a single- and a cross-modal interval
    assert family_level(cells, ["text_weak", "image_weak"], [0.0, 1.0], pairs) == pytest.approx(1 - 0.05 / 12)
    results = analyse(cells, tmp_path)
    assert results["bootstrap"]["family_level"] == pytest.approx(1 - 0.05 / 12)
    for c in results["comparisons"]:
        for m in ("ndcg_single@10", "rsum"):
            assert c[m]["family_level"] == pytest.approx(1 - 0.05 / 12)
            assert c[m]["family_low"] <= c[m]["low"] <= c[m]["high"] <= c[m]["family_high"]
        assert set(c["unadjusted"]) == {"single", "cross", "claim"}
    # the report shows both intervals of each difference, the verdicts' second
    from experiments.imbalance.report import verdict_table

    table = verdict_table(results, "infonce")
    assert f"[{100 * (1 - 0.05 / 12):.2f}% CI]" in table.splitlines()[0]
    c = next(c for c in results["comparisons"] if c["baseline"] == "infonce")
    rsum = c["rsum"]
    shown = f"{rsum['difference']:+.2f} [{rsum['low']:+.2f}, {rsum['high']:+.2f}] "
    shown += f"[{rsum['family_low']:+.2f}, {rsum['family_high']:+.2f}]"
    assert shown in table
