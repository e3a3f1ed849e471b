"""Sweeps: Hydra callbacks (an Optuna study that resumes, the sweep summary) and one sweep at a glance."""

from vlr.sweeps.callbacks import ResumeOptunaStudy, SummarizeSweep

__all__ = ["ResumeOptunaStudy", "SummarizeSweep"]
