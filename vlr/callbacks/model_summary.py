"""Lightning's model summary without a FLOPs column of zeros and a "Total Flops: 0" line.

Lightning counts FLOPs only through a module's ``example_input_array``, which vlr's
module does not set (its batches are dicts of images and token ids whose shapes come from
the data), so every run printed ``0 Total Flops``: a number that reads as a measurement.
The column and the line are left out when nothing was counted; everything else is Lightning's table.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table

log = logging.getLogger(__name__)


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
        if not total_flops:  # neither the FLOPs column nor the total: nothing was counted
            summary_data = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = _format_summary_table(
            total_parameters, trainable_parameters, model_size, total_training_modes, total_flops, *summary_data
        )
        if not total_flops:
            table = "\n".join(line for line in table.splitlines() if not line.rstrip().endswith("Total Flops"))
        log.info("\n" + table)
