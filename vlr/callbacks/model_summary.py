"""Lightning's model summary callback, with vlr's own table: no FLOPs column of zeros and no
"Total Flops: 0" line.

Lightning counts FLOPs only through a module's ``example_input_array``, which vlr's
module does not set (its batches are dicts of images and token ids whose shapes come from
the data), so every run printed ``0 Total Flops``: a number that reads as a measurement.
The table is written here (`summary_table`) from the columns Lightning hands to the public
``summarize`` hook; the FLOPs column and line appear only when something was counted.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count

log = logging.getLogger(__name__)


def summary_table(
    columns: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    training_modes: dict[str, int],
    total_flops: int,
) -> str:
    """One row per layer (``columns``: header and values), then the totals, one per line."""
    if not total_flops:  # neither the FLOPs column nor the total: nothing was counted
        columns = [(name, values) for name, values in columns if name != "FLOPs"]
    widths = [max([len(name), *(len(str(v)) for v in values)]) for name, values in columns]
    rule = "-" * (sum(widths) + 3 * (len(columns) + 1))
    rows = [" | ".join(f"{name:<{w}}" for (name, _), w in zip(columns, widths, strict=True)), rule]
    for i in range(len(columns[0][1]) if columns else 0):
        rows.append(" | ".join(f"{str(values[i]):<{w}}" for (_, values), w in zip(columns, widths, strict=True)))
    rows.append(rule)
    totals = [
        (get_human_readable_count(trainable_parameters), "Trainable params"),
        (get_human_readable_count(total_parameters - trainable_parameters), "Non-trainable params"),
        (get_human_readable_count(total_parameters), "Total params"),
        (get_formatted_model_size(model_size), "Total estimated model params size (MB)"),
        (training_modes.get("train", 0), "Modules in train mode"),
        (training_modes.get("eval", 0), "Modules in eval mode"),
    ]
    if total_flops:
        totals.append((get_human_readable_count(total_flops), "Total Flops"))
    rows += [f"{str(value):<10}{label}" for value, label in totals]
    return "\n".join(rows)


class ModelSummary(LightningModelSummary):
    @staticmethod
    def summarize(
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs: Any,
    ) -> None:
        table = summary_table(
            summary_data, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops
        )
        log.info("\n" + table)
