"""Stopping a training run on request: Ctrl-C or SIGTERM stop it between two steps, with
``last.ckpt`` saved (`vlr.callbacks.LastCheckpoint`), and the command exits with the shell's
status for the signal (130 for Ctrl-C, 143 for SIGTERM) and one line saying how to resume."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from lightning.pytorch.utilities.exceptions import SIGTERMException

from vlr.errors import UserError
from vlr.runs.finite import describe, nonfinite_state

log = logging.getLogger(__name__)
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """Which signal asked training to stop (SIGTERM unless Ctrl-C was seen here)."""

    def __init__(self):
        self.signal = signal.SIGTERM

    @contextlib.contextmanager
    def ctrl_c_stops_between_steps(self) -> Iterator[None]:
        """Ctrl-C asks Lightning to stop after the current step, as SIGTERM does (its SIGTERM
        handling raises ``SIGTERMException`` between steps, and `LastCheckpoint` saves then);
        a second Ctrl-C aborts at once, keeping the previous ``last.ckpt``."""
        seen: list[int] = []

        def on_sigint(signum: int, frame: object) -> None:
            if seen:
                raise KeyboardInterrupt
            seen.append(signum)
            self.signal = signal.SIGINT
            log.warning("Ctrl-C: stopping after this step and saving last.ckpt (press again to abort at once)")
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's own SIGTERM handling: stop between steps

        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, on_sigint) if main else None
        try:
            yield
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


class NothingTrained(UserError, RuntimeError):
    """Training ended without a single optimizer step, or with non-finite weights: what it would
    test and report is not a trained model."""


def check_trained(trainer, model) -> None:
    """Refuse to report a model that was never trained (zero steps) or whose weights are not finite."""
    if trainer.global_step == 0:
        batches = trainer.num_training_batches
        raise NothingTrained(
            f"training ran zero optimizer steps ({batches} training batches an epoch, trainer.max_steps="
            f"{trainer.max_steps}, trainer.max_epochs={trainer.max_epochs}): data.num_train smaller than one "
            "data.batch_size (incomplete batches are dropped), or a zero step/epoch limit; nothing to test"
        )
    broken = nonfinite_state(model)
    if broken:
        raise NothingTrained(f"training ended with non-finite parameters ({describe(broken)}); nothing to test")


def fit_until_stopped(trainer, model, datamodule, ckpt_path: str | None, last_checkpoint: Path) -> None:
    """``trainer.fit``; a stop signal ends the command (`SystemExit`) once ``last.ckpt`` is saved;
    a fit that trained nothing, or ended with non-finite weights, ends it in one line."""
    stop = StopRequest()
    try:
        with stop.ctrl_c_stops_between_steps():
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        print(
            f"training stopped by a signal; {last_checkpoint} holds the state: run the same command to resume",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_STATUS[stop.signal]) from None
    check_trained(trainer, model)
