"""``study --fusion K``: every cell's overrides gain the fusion encoder and re-ranking, in folders
of their own; the default study is unchanged."""

import argparse

import pytest

from experiments.imbalance import study
from tests.conftest import compose_config


def _args(*argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--fusion", type=int, default=None)
    parser.add_argument("--override", nargs="*", default=[])
    parser.add_argument("--out", default=study.OUT)
    parser.add_argument("--runs", default=study.RUNS)
    args = parser.parse_args(list(argv))
    study.with_fusion(args, parser)
    return args


def test_fusion_adds_its_overrides_and_its_own_folders():
    args = _args("--fusion", "16", "--override", "trainer.max_epochs=2")
    assert args.override == [
        "fusion=default", "model.fusion.negative_temperature_start=100", "eval.rerank.k=16", "trainer.max_epochs=2",
    ]  # fmt: skip
    assert args.out == study.OUT / "fusion" and args.runs == study.RUNS.parent / "runs_fusion"
    plain = _args("--override", "trainer.max_epochs=2")
    assert plain.override == ["trainer.max_epochs=2"] and plain.out == study.OUT and plain.runs == study.RUNS
    with pytest.raises(SystemExit):
        _args("--fusion", "-1")


@pytest.mark.parametrize("arm", ["infonce", "covlr"])
def test_a_fusion_cell_composes_with_the_study_preset(tmp_path, arm):
    cell = study.Cell(arm, "text_weak", 0.5, 0, 0)
    overrides = cell.overrides(study.PRESET, tuple(_args("--fusion", "16").override))
    cfg = compose_config(*overrides, run_dir=tmp_path, root=tmp_path)
    assert cfg.model.fusion.layers == 2 and cfg.model.evaluation.rerank.k == 16 and cfg.objective.itm_weight == 2.0
    assert cfg.objective.name == arm and cfg.imbalance.strength == 0.5
    assert cfg.model.fusion.negative_temperature_start == 100 and cfg.model.fusion.negative_temperature == 0.07
    # the user's own overrides come last: a fusion study without the curriculum
    plain = _args("--fusion", "16", "--override", "model.fusion.negative_temperature_start=null").override
    cfg = compose_config(*cell.overrides(study.PRESET, tuple(plain)), run_dir=tmp_path, root=tmp_path)
    assert cfg.model.fusion.negative_temperature_start is None
