"""experiments/compare/: run directories -> cells -> mean ± std tables, verdict and plot."""

import json
import statistics

import numpy as np
import pytest
import yaml

from experiments.compare import (
    cell_from_run_dir,
    cells_from_dirs,
    check_comparable,
    difference,
    report,
    summarize,
    verdict,
    write_outputs,
)
from experiments.paired import smallest_detectable


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
    # covlr: NDCG +30 (resolved), rsum 0 ± 2 x 1.29: the interval reaches past ±2, so no equivalence;
    # the s.e. sqrt(1/3 + 4/3) over 3 seeds is a pair s.d. of sqrt(5): what 3 seeds can detect
    assert "covlr vs infonce" in lines[0] and "(mean ± 2 s.e.: no per-query rankings)" in lines[0]
    detectable = smallest_detectable(5**0.5, 3)
    assert 5**0.5 < detectable < 10 * 5**0.5
    assert (
        "**not resolved: single-modal rises, but a cross-modal cost beyond ±2 is not excluded "
        f"(3 seeds detect rsum differences of {detectable:.2f} or more)**"
    ) in lines[0]
    assert "covlr vs infonce" in verdict(summary, margin=5.0) and "**yes**" in verdict(summary, margin=5.0)
    assert "sad vs infonce" in lines[1] and "**no: it costs cross-modal retrieval**" in lines[1]
    tight = [_cell("infonce", 0.5, s, 100 + d, 200) for s, d in enumerate([0, 0.2, -0.2])]
    tight += [_cell("covlr", 0.5, s, 100 + d, 230) for s, d in enumerate([0.1, 0.3, -0.1])]
    [line] = verdict(summarize(tight)).splitlines()
    assert "**yes**" in line  # the whole rsum interval inside ±2


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


def _run_dir(root, name, cfg, rsum):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (run / "metrics.json").write_text(json.dumps({"test/rsum": rsum, "test/rsum_single": 50.0}))


def _cfg(objective, seed=0, data="synthetic", **options):
    return {
        "objective": {"name": objective, **options},
        "imbalance": {"name": "none", "strength": 0.0},
        "seed": seed,
        "data": {"name": data, "num_workers": seed},  # num_workers never changes a result
        "paths": {"output_dir": f"/runs/{objective}{seed}"},
    }


def test_unlike_runs_are_never_pooled_and_the_differing_keys_are_named(tmp_path):
    import pytest

    from experiments.compare import check_comparable, main

    root = tmp_path / "runs"
    _run_dir(root, "a", _cfg("infonce", 0), 100.0)
    _run_dir(root, "b", _cfg("infonce", 1), 102.0)
    _run_dir(root, "c", _cfg("covlr", 0, alpha=0.01, beta=1.0), 104.0)  # objectives differ in their options: fine
    check_comparable(cells_from_dirs([root]))
    _run_dir(root, "d", _cfg("covlr", 1, alpha=0.1, beta=1.0), 90.0)  # another alpha for the same objective
    _run_dir(root, "e", _cfg("infonce", 2, data="coco"), 50.0)  # another dataset
    with pytest.raises(SystemExit, match=r"differ in .*data\.name: 'coco', 'synthetic'; objective\.alpha: 0\.01, 0\.1"):
        main([str(root), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()  # nothing written from a pooled comparison
    main([str(root), "--out", str(tmp_path / "out"), "--ignore", "data.name", "--ignore", "objective.alpha"])
    assert "| none | 0 | covlr | 2 |" in (tmp_path / "out" / "report.md").read_text()


def test_offline_wandb_runs_are_read_from_their_files(tmp_path):
    # written by another process, as a training run writes them: W&B's service may still be
    # writing a run's last records when finish() returns in the process that logged them
    import subprocess
    import sys

    from experiments.compare import cells_from_wandb_offline

    writer = (
        "import sys, wandb\n"
        "run = wandb.init(project='t', dir=sys.argv[1], mode='offline', config={'objective': {'name': 'covlr', "
        "'alpha': 0.01}, 'imbalance': {'name': 'text_weak', 'strength': 0.5}, 'seed': 3})\n"
        "run.log({'val/rsum': 1.0}); run.log({'test/rsum': 123.5, 'test/rsum_single': 45.0})\n"
        "run.finish()\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(tmp_path)], check=True, capture_output=True, timeout=300)
    (cell,) = cells_from_wandb_offline([tmp_path])
    assert (cell["objective"], cell["imbalance"], cell["strength"], cell["seed"]) == ("covlr", "text_weak", 0.5, 3)
    assert cell["metrics"] == {"test/rsum": 123.5, "test/rsum_single": 45.0}
    assert cell["config"]["objective.alpha"] == 0.01


def test_the_figure_and_the_results_table_are_logged_to_an_offline_wandb_run(tmp_path):
    from experiments.compare import main
    from vlr.tracking.wandb_files import read_run

    root = tmp_path / "runs"
    for seed, (objective, rsum) in enumerate([("infonce", 100.0), ("infonce", 104.0), ("covlr", 110.0)]):
        _run_dir(root, f"r{seed}", _cfg(objective, seed=seed), rsum)
    main([str(root), "--out", str(tmp_path / "out"), "--log-wandb", "vlr", "--title", "T"])
    [folder] = list((tmp_path / "out" / "wandb").glob("offline-run-*"))
    run = read_run(folder)
    assert run.name == "T" and run.job_type == "compare"
    [logged] = run.history
    assert (folder / "files" / logged["tradeoff/path"]).read_bytes() == (tmp_path / "out" / "tradeoff.png").read_bytes()
    table = json.loads((folder / "files" / logged["results/path"]).read_text())
    columns = table["columns"]
    rows = [dict(zip(columns, r, strict=True)) for r in table["data"]]
    assert [(r["objective"], r["n"]) for r in rows] == [("infonce", 2), ("covlr", 1)]
    assert rows[0]["rsum mean"] == 102.0 and rows[0]["rsum std"] == statistics.stdev([100.0, 104.0])
    assert rows[1]["rsum mean"] == 110.0 and rows[1]["rsum_single mean"] == 50.0


def _rankings_file(path, n_img, i2t, t2i, ndcg):
    """Per-query rankings with constant values: every image query scores ``i2t`` (R@k) and
    ``ndcg`` (i2i and t2t scene NDCG@10), every caption query ``t2i``; 2 captions per image."""
    from safetensors.numpy import save_file

    caps = 2
    r = {"text_to_image": np.repeat(np.arange(n_img), caps)}
    for k in (1, 5, 10):
        r[f"i2t/R@{k}"] = np.full(n_img, i2t)
        r[f"t2i/R@{k}"] = np.full(n_img * caps, t2i)
    r["i2i/scene_NDCG@10"] = np.full(n_img, ndcg)
    r["t2t/scene_NDCG@10"] = np.full(n_img * caps, ndcg)
    save_file(r, str(path))


def _ranked_cell(tmp_path, objective, seed, i2t, ndcg):
    path = tmp_path / f"{objective}-{seed}.safetensors"
    _rankings_file(path, 20, i2t, 0.5, ndcg)
    cell = _cell(objective, 1.0, seed, 0.0, 0.0)
    cell["metrics"] = {
        "test/rsum": 300 * i2t + 150.0,
        "test/i2i/scene_NDCG@10": 100 * ndcg,
        "test/t2t/scene_NDCG@10": 100 * ndcg,
        "test/rsum_single": 200 * ndcg,
    }
    cell["rankings"] = str(path)
    return cell


def test_with_rankings_the_verdict_uses_paired_intervals_and_an_equivalence_margin(tmp_path):
    cells = [_ranked_cell(tmp_path, "infonce", s, 0.5, 0.5) for s in (0, 1, 2)]
    # covlr: NDCG up 10 points per direction on every seed, rsum within 0.3 points: a resolved rise, no cost
    cells += [_ranked_cell(tmp_path, "covlr", s, 0.5 + 0.001 * s, 0.6) for s in (0, 1, 2)]
    # sad: NDCG up, rsum down 15 points on every seed: a resolved cost
    cells += [_ranked_cell(tmp_path, "sad", s, 0.45, 0.6) for s in (0, 1, 2)]
    # relation_kd: rsum -5.7 / +0.3 / +6.3 across seeds: the interval spans the ±2 margin, unresolved
    cells += [_ranked_cell(tmp_path, "relation_kd", s, 0.501 + 0.02 * (s - 1), 0.6) for s in (0, 1, 2)]
    lines = {line.split(", ")[1].split(" vs")[0]: line for line in verdict(summarize(cells), cells).splitlines()}
    assert "ndcg_single@10 +20.00 [+20.00, +20.00], rsum +0.30 [+0.00, +0.60] → **yes**" in lines["covlr"]
    assert "(3 paired seeds)" in lines["covlr"] and "bootstrap over seeds and test images" in lines["covlr"]
    assert "rsum -15.00 [-15.00, -15.00] → **no: it costs cross-modal retrieval**" in lines["sad"]
    assert "rsum +0.30 [-5.70, +6.30] → **not resolved: single-modal rises" in lines["relation_kd"]
    # per-seed rsum differences -5.7, +0.3, +6.3: s.d. 6
    assert f"(3 seeds detect rsum differences of {smallest_detectable(6.0, 3):.2f} or more)" in lines["relation_kd"]


def test_one_seed_per_arm_is_never_a_resolved_difference():
    cells = [_cell("infonce", 0.5, 0, 100, 200), _cell("covlr", 0.5, 0, 100.01, 200.01)]
    [line] = verdict(summarize(cells)).splitlines()
    assert "**not resolved: one seed" in line


def test_the_imbalance_seed_follows_the_run_seed_and_eval_directories_are_read_as_what_they_evaluated(tmp_path):
    cells = [
        {"objective": "infonce", "config": {"objective.name": "infonce", "seed": s, "imbalance.seed": s}}
        for s in (0, 1)
    ]
    check_comparable(cells)  # imbalance.seed differs with the seed only: not a difference
    run = tmp_path / "eval"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({**_cfg("infonce"), "task_name": "eval"}))
    (run / "metrics.json").write_text(json.dumps({"test/rsum": 50.0}))
    with pytest.raises(SystemExit, match="a vlr.eval run without evaluated_config.yaml"):
        cell_from_run_dir(run)
    (run / "evaluated_config.yaml").write_text(yaml.safe_dump({**_cfg("triplet", seed=4), "task_name": "eval"}))
    cell = cell_from_run_dir(run)
    assert (cell["objective"], cell["seed"]) == ("triplet", 4) and cell["command"].startswith("python -m vlr.eval")


def test_one_paired_seed_with_rankings_is_not_a_resolved_difference(tmp_path):
    cells = [_ranked_cell(tmp_path, "infonce", 0, 0.5, 0.5), _ranked_cell(tmp_path, "covlr", 0, 0.5, 0.6)]
    [line] = verdict(summarize(cells), cells).splitlines()
    assert "(1 paired seeds)" in line and "**not resolved: one seed" in line


def test_the_single_modal_table_shows_the_ndcg_columns_the_runs_logged_whatever_relevance_graded_them():
    from experiments.compare.tables import single_columns

    cells = [_cell("infonce", 0.0, s, 100.0, 50.0) for s in (0, 1)]
    for s, cell in enumerate(cells):
        cell["metrics"] |= {
            "test/t2t/rouge_l_NDCG@10": 60.0 + s,
            "test/i2i/scene_NDCG@10": 70.0,
            "test/i2x/scene_NDCG@10": 1,
        }
    columns = single_columns(summarize(cells))
    assert columns[:4] == ["i2i/R@1", "t2t/R@1", "i2i/scene_NDCG@10", "t2t/rouge_l_NDCG@10"]  # no mixed (i2x)
    row = report(cells, "T").split("## Single-modal retrieval")[1].splitlines()[4]
    assert row.startswith("| text_weak | 0 | infonce | 2 | – | – | 70.00 ± 0.00 | 60.50 ± 0.71 |")


def test_the_margin_is_an_option_and_must_be_positive(tmp_path, capsys):
    from experiments.compare.cli import main

    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path), "--margin", "0"])
    assert stop.value.code == 2 and "--margin must be > 0 rsum points, got 0.0" in capsys.readouterr().err
