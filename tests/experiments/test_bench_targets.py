from experiments.bench.run import check_targets


def test_targets_are_checked_with_their_own_bounds():
    got = check_targets({"covlr_vs_infonce": 2.1, "sad_vs_infonce": 1.31, "eval_vs_vse_style": 1.0, "other": 9.0})
    assert got["covlr_vs_infonce"] == {"value": 2.1, "target": "<= 2.1", "met": True}  # inclusive bound
    assert got["sad_vs_infonce"]["met"] is False
    assert got["eval_vs_vse_style"] == {"value": 1.0, "target": "< 1.0", "met": False}  # strict bound
    assert "other" not in got
