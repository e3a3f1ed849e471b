"""What a run leaves behind for people: metrics.json and a console table."""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from vlr.callbacks.skipped_images import skipped_images
from vlr.io import atomic_write, atomic_write_text

results_log = logging.getLogger("vlr.results")


def stage_metrics(callback_metrics: dict, stage: str) -> dict[str, float]:
    """Flat ``{stage}/...`` metrics as plain floats, sorted by name."""
    out = {k: float(v) for k, v in callback_metrics.items() if k.startswith(f"{stage}/")}
    return dict(sorted(out.items()))


def write_metrics(path: Path, metrics: dict[str, float]) -> None:
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"refusing to write non-finite metrics {bad} to {path}")
    atomic_write_text(path, json.dumps(metrics, indent=2) + "\n", "metrics")


def write_evaluation_info(path: Path, info: dict) -> None:
    """``evaluation.json`` beside ``metrics.json``: how the numbers were computed (tie rule,
    tiers) and the chance level of every metric on this split."""
    atomic_write_text(path, json.dumps(info, indent=2) + "\n", "evaluation info")


def write_rankings(path: Path, rankings: dict, meta: dict) -> None:
    """Per-query results of a final evaluation, as ``rankings.safetensors`` (no pickle).

    Tensors (queries in split order: images by image index, captions by caption index;
    t2t/t2x/i2x query captions are all captions for ``t2t/*`` and each image's first caption
    for the NDCG keys):
    - ``{i2t,t2i,t2t,i2i}/rank`` float64: the 0-based rank of the query's best positive
      under the tie rule (expected rank by default); NaN for a query with nothing to find;
    - ``{direction}/R@{k}`` float64: the probability the best positive is in the top k
      (0 or 1 without ties), so a metric is 100 x the mean over queries;
    - ``{direction}/{relevance}_NDCG@{k}`` float64 per query, for each relevance the run
      graded by (``scene``, ``rouge_l``, ``labels``; text queries are each image's first caption);
    - ``{direction}/topk`` int64 [queries, k]: gallery indices of the k best scores;
    - ``text_to_image`` int64: the image of every caption.
    ``meta`` (tie rule, split, checkpoint) goes into the safetensors header metadata.
    """
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in rankings.items()}, metadata={k: str(v) for k, v in meta.items()})
    atomic_write(path, lambda fh: fh.write(data), "rankings")


DIRECTIONS = ("i2t", "t2i", "t2t", "i2i", "i2x", "t2x")


def _split_tiers(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``{stage}/{tier}/{direction}/{name}`` keys (COCO's 5k and 1k) grouped per tier, prefix kept
    as ``{stage}/...`` inside each group; untiered metrics under ''."""
    groups: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        tiered = len(parts) >= 3 and parts[1] not in DIRECTIONS and parts[2] in (*DIRECTIONS, "rsum", "rsum_single")
        tier, rest = (parts[1], [parts[0], *parts[2:]]) if tiered else ("", parts)
        groups.setdefault(tier, {})["/".join(rest)] = value
    return groups


def _relevance_of(name: str) -> tuple[str, str]:
    """``scene_NDCG@10`` -> (``scene``, ``NDCG@10``); ``cxc_R@10`` -> (``cxc``, ``R@10``); ``R@1`` -> ('', ``R@1``)."""
    head, sep, tail = name.rpartition("_")
    return (head, tail) if sep and tail.startswith(("NDCG@", "R@", "spearman")) else ("", name)


def _table(metrics: dict[str, float], title: str) -> tuple[Table, dict[str, float]]:
    """Recall rows first, then one block per relevance (its name as a row heading, then its
    NDCG / CxC rows), so long names like ``rouge_l_NDCG@10`` never widen the first column."""
    stage = next(iter(metrics)).split("/")[0] if metrics else ""
    present = [d for d in DIRECTIONS if any(k.startswith(f"{stage}/{d}/") for k in metrics)]
    names = sorted(
        {k.split("/")[2] for k in metrics if k.count("/") == 2 and k.split("/")[1] in present},
        key=lambda n: (_relevance_of(n)[0], not n.startswith("R@"), "NDCG" not in n, len(n), n),
    )
    table = Table(title=title)
    table.add_column("metric")
    for d in present:
        table.add_column(d, justify="right")
    heading = ""
    for name in names:
        relevance, shown = _relevance_of(name)
        if relevance != heading:
            table.add_row(f"[bold]{relevance}[/bold]", *[""] * len(present))
            heading = relevance
        cells = [metrics.get(f"{stage}/{d}/{name}") for d in present]
        table.add_row(f"  {shown}" if relevance else shown, *["" if c is None else f"{c:.2f}" for c in cells])
    rest = {k: v for k, v in metrics.items() if k.count("/") == 1 or k.split("/")[1] not in present}
    return table, rest


def _lines(values: dict[str, float], width: int = 78) -> list[str]:
    """``name = value`` pairs packed into lines of at most ``width`` characters."""
    lines, line = [], ""
    for k, v in values.items():
        item = f"{k.split('/', 1)[1]} = {v:.2f}"
        if line and len(line) + 2 + len(item) > width:
            lines.append(line)
            line = ""
        line = f"{line}  {item}" if line else item
    return lines + ([line] if line else [])


def print_metrics_table(
    metrics: dict[str, float], title: str, chance: dict[str, float] | None = None, ties: str | None = None
) -> None:
    """Metrics as rows, retrieval directions as columns (one table per gallery tier); totals and
    overlaps underneath; then the same layout for the chance level of this split (the metrics of
    a constant model under the tie rule), when given. Printed on the console and written, as
    plain text, to the run's log file (Hydra's ``train.log`` / ``eval.log``)."""
    parts: list = []
    for tier, group in _split_tiers(metrics).items():
        suffix = escape(f" [{tier} gallery]") if tier else ""  # escaped: rich would read [...] as markup
        table, rest = _table(group, title + suffix + (f", ties={ties}" if ties else ""))
        parts += [table, *_lines(rest)]
        chance_group = _split_tiers(chance).get(tier) if chance else None
        if chance_group:
            table, rest = _table(chance_group, f"chance level{suffix} (a constant model)")
            parts += [table, *_lines(rest)]
    console = Console()
    for part in parts:
        console.print(part)
    buffer = io.StringIO()
    plain = Console(file=buffer, width=console.width, color_system=None, force_terminal=False)
    for part in parts:
        plain.print(part)
    to_log_files(buffer.getvalue().rstrip())


def to_log_files(message: str) -> None:
    """``message`` in the run's log files only (the root logger's file handlers: Hydra's job
    log), not the console, which has already shown it."""
    record = results_log.makeRecord(results_log.name, logging.INFO, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def bad_sample_counts(trainer) -> dict[str, float]:
    """``data/bad_samples/<split>``: the records each split left out under ``data.on_bad_sample=skip``
    (`RetrievalDataModule.bad_samples`); none under ``error``, where a bad record stops the run.
    ``data/skipped_images/train``: the training draws whose image failed to load while training
    (``data.on_bad_image=skip``, `vlr.callbacks.SkippedImages`), for a run that trained."""
    datamodule = getattr(trainer, "datamodule", None)
    counts = getattr(datamodule, "bad_samples", None) or {}
    out = {f"data/bad_samples/{split}": float(n) for split, n in sorted(counts.items())}
    drawn = skipped_images(trainer)
    if drawn is not None and getattr(datamodule, "on_bad_image", None) == "skip":
        out["data/skipped_images/train"] = float(drawn)
    return out


def summarise_in_wandb(trainer, values: dict[str, float]) -> None:
    """``values`` in the summary of the run's W&B run (beside its best and final metrics)."""
    from lightning.pytorch.loggers import WandbLogger

    for logger in trainer.loggers if values else []:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(values)


def finish_evaluation(
    trainer, model, cfg, split: str, title: str, meta: dict | None = None, extra: dict[str, float] | None = None
) -> dict[str, float]:
    """After ``trainer.test``/``validate``: the split's metrics (plus ``extra``, e.g. the best
    epoch's val metrics, and the records left out per split) to ``metrics.json``, how they were
    computed and the chance levels to ``evaluation.json``, per-query rankings when asked, and the
    console table. Rank 0 writes."""
    metrics = stage_metrics(trainer.callback_metrics, split)
    if not trainer.is_global_zero:
        return metrics
    out_dir = Path(cfg.paths.output_dir)
    bad = bad_sample_counts(trainer)
    write_metrics(out_dir / "metrics.json", {**metrics, **(extra or {}), **bad})
    summarise_in_wandb(trainer, bad)
    evaluator = model.evaluators[split]
    chance = model.chance_levels.get(split, {})
    relevance = {"primary": evaluator.primary_relevance, "graded": list(evaluator.relevance)}
    if evaluator.cxc is not None:
        relevance["cxc"] = evaluator.cxc.describe()
    info = {
        "split": split,
        "ties": evaluator.ties,
        "tie_tolerance": evaluator.tie_tolerance,
        "tiers": evaluator.tiers,
        # which relevance graded each NDCG; rsum_single is i2i + t2t NDCG@10 under the primary one
        "relevance": relevance,
        **({"rerank": evaluator.rerank_info} if getattr(evaluator, "rerank_info", None) else {}),
        **(meta or {}),
        "chance": chance,
    }
    write_evaluation_info(out_dir / "evaluation.json", info)
    if evaluator.rankings is not None:
        path = out_dir / "rankings.safetensors"
        write_rankings(path, evaluator.rankings, {"split": split, "ties": evaluator.ties, **(meta or {})})
        print(f"per-query rankings written to {path}")
    if evaluator.primary_relevance:
        title += f", relevance={evaluator.primary_relevance}"
    print_metrics_table(metrics, title, chance=chance, ties=evaluator.ties)
    return metrics
