"""Known third-party messages that say nothing about a vlr run, silenced one by one (never all warnings).

Installed by the entry points (`vlr.train`, `vlr.eval`) before anything is built.
"""

from __future__ import annotations

import logging
import warnings

# (message regex, why it is noise)
WARNINGS = (
    (r"Found \d+ module\(s\) in eval mode", "the frozen reference towers are in eval mode on purpose"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning's own pytree helper, on every batch"),
    (
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint need to be provided",
        "vlr.eval loads a training run's checkpoint without the training callbacks, on purpose",
    ),
    (
        r"It is recommended to use `self.log\('(val|test)/",
        "vlr's evaluation metrics are computed from every rank's gathered rows: the same on all ranks",
    ),
    (
        r"Using `DistributedSampler` with the dataloaders. During `trainer\.(test|validate)\(\)`",
        "RetrievalEvaluator keeps one row per dataset index (tests: 2 processes score as 1)",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        "a resumed run writes into its own checkpoints folder, by design",
    ),
    (
        r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not resumable",
        "RetrievalDataModule continues the epoch's order itself (tests/test_resume.py: bit-equal to an "
        "uninterrupted run)",
    ),
)
# Lightning's advertisement for its cloud logger, printed by every Trainer; its note that the
# callbacks group's ModelSummary (vlr.callbacks.ModelSummary) replaces its default one
LOG_PREFIXES = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:", "Trainer already configured with model summary callbacks")
}

# loggers whose INFO lines are noise: alembic lists its plugins each time Optuna opens a SQLite study
QUIET_LOGGERS = {"alembic": logging.WARNING}


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def silence_known_noise() -> None:
    for pattern, _why in WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name, prefixes in LOG_PREFIXES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
