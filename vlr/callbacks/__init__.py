"""Callbacks: checkpointing (`LastCheckpoint`, `AtomicCheckpointIO`, configured by the
``callbacks`` group and `vlr.train`) and the run bookkeeping every `RetrievalModule` adds
itself (`ObjectiveSchedule`, `TorchRNGState`). Each keeps its own state in checkpoints and
can be tested alone."""

from vlr.callbacks.last_checkpoint import AtomicCheckpointIO, LastCheckpoint
from vlr.callbacks.objective_schedule import ObjectiveSchedule, check_stages, forget_best, restore_best
from vlr.callbacks.rng_state import TorchRNGState

__all__ = [
    "AtomicCheckpointIO",
    "LastCheckpoint",
    "ObjectiveSchedule",
    "TorchRNGState",
    "check_stages",
    "forget_best",
    "restore_best",
]
