"""Callbacks: checkpointing (`LastCheckpoint`, `AtomicCheckpointIO`, configured by the
``callbacks`` group and `vlr.train`), `ParameterCounts`, `LearningRateMonitor` and
`ModelSummary` and `ProgressLog` (``callbacks`` group), and the run bookkeeping every `RetrievalModule`
adds itself (`ObjectiveSchedule`, `TorchRNGState`, `SkippedImages`).
Each keeps its own state in checkpoints and can be tested alone."""

from vlr.callbacks.last_checkpoint import AtomicCheckpointIO, LastCheckpoint
from vlr.callbacks.learning_rates import LearningRateMonitor
from vlr.callbacks.model_summary import ModelSummary
from vlr.callbacks.objective_schedule import ObjectiveSchedule, check_stages, forget_best, restore_best
from vlr.callbacks.parameter_counts import ParameterCounts, parameter_counts
from vlr.callbacks.progress_log import ProgressLog
from vlr.callbacks.rng_state import TorchRNGState
from vlr.callbacks.skipped_images import SkippedImages, skipped_images

__all__ = [
    "AtomicCheckpointIO",
    "LastCheckpoint",
    "LearningRateMonitor",
    "ModelSummary",
    "ObjectiveSchedule",
    "ParameterCounts",
    "ProgressLog",
    "SkippedImages",
    "TorchRNGState",
    "check_stages",
    "forget_best",
    "parameter_counts",
    "restore_best",
    "skipped_images",
]
