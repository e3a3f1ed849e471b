"""tradeoff.png for a comparison: `vlr.sweeps.summary.tradeoff_figure` (the one trade-off figure)
over the runs pooled by seed: a line per objective (and imbalance) through its strengths, bars
one std over seeds."""

from __future__ import annotations

from pathlib import Path

from experiments.compare.pooled import Summary, objective_order
from vlr.sweeps.summary import SINGLE_MODAL_NDCG, tradeoff_figure


def tradeoff_plot(summary: Summary, path: Path) -> Path | None:
    """Cross-modal rsum against the verdict's single-modal measure (the NDCG@10 sum where every
    cell logs it, else rsum_single). With several imbalances, the balanced cells start each line."""
    single = SINGLE_MODAL_NDCG if all(SINGLE_MODAL_NDCG in stats for stats in summary.values()) else "rsum_single"
    imbalances = sorted({k[1] for k in summary})
    cells = dict(summary)
    if "none" in imbalances and len(imbalances) > 1:
        imbalances.remove("none")
        for (obj, imbalance, strength), stats in summary.items():
            if imbalance == "none":
                del cells[(obj, imbalance, strength)]
                for other in imbalances:
                    cells.setdefault((obj, other, 0.0), stats)
    points, errors = [], []
    for key in sorted(cells, key=lambda k: (objective_order(k[0]), k[1], k[2])):
        stats = cells[key]
        if "rsum" not in stats or single not in stats:
            continue
        obj, imbalance, strength = key
        one = len(imbalances) == 1
        name = f"{strength:g}" if one else f"{imbalance} {strength:g}"
        points.append((name, obj if one else f"{obj}, {imbalance}", stats["rsum"][0], stats[single][0]))
        errors.append((stats["rsum"][1], stats[single][1]))
    title = "Trade-off per objective (point labels: imbalance strength; bars: std over seeds)"
    legend = "objective" if len(imbalances) == 1 else "objective, imbalance"
    return tradeoff_figure(points, path, title, errors=errors, single=single, legend=legend)
