"""The console summary of an evaluation fits an 80-column terminal, whatever it holds."""

import pytest

from vlr.tracking.reporting import DIRECTIONS, print_metrics_table


@pytest.mark.parametrize("tiers", [("",), ("5k/", "1k/")])
def test_the_metrics_table_fits_80_columns_and_shows_every_value(capsys, monkeypatch, tiers):
    monkeypatch.setenv("COLUMNS", "80")
    metrics = {}
    for tier in tiers:
        for d in DIRECTIONS:
            for name in ("R@1", "R@5", "R@10", "rouge_l_NDCG@10", "rouge_l_NDCG@20", "scene_NDCG@50", "cxc_R@10"):
                metrics[f"test/{tier}{d}/{name}"] = 100.0
            metrics[f"test/{tier}{d}/meanr"] = 24999.99  # COCO 5K captions: ranks up to 25,000
        metrics[f"test/{tier}rsum"] = 600.0
        metrics[f"test/{tier}rsum_single"] = 600.0
    metrics |= {"test/image/overlap@10": 0.99, "test/text/overlap@10": 0.99}
    title = "test metrics (covlr on coco_official), checkpoint outputs/train/2026-11-30/best.ckpt"
    print_metrics_table(metrics, title, chance=metrics, ties="expected")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, max(lines, key=len)
    assert out.count("24999.99") == 2 * len(DIRECTIONS) * len(tiers)  # metrics and chance tables, no cell cut
    assert "…" not in out
    assert out.count("rsum = 600.00") == 2 * len(tiers) and out.count("overlap@10 = 0.99") == 4
