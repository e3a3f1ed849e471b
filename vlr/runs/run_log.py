"""`RunLogHandler`: the run's log file (``train.log``, ``eval.log``) is written only once the start
is accepted.

Hydra opens its job log (``<run dir>/<task>.log``) before vlr runs, and a refused start
(another configuration, a folder in use, a checkpoint that does not fit, ``vlr.eval`` pointed at
a training run) would otherwise append its lines, or create ``eval.log``, in a folder it must
leave byte-identical. ``vlr/conf/{train,eval}.yaml`` make Hydra's file handler this class: it
keeps the records in memory until `accept_run_log` (the start passed every check; from then on
it writes as a plain ``FileHandler``) or `refuse_run_log` (they are dropped, and so is the one
``error:`` line of the refusal). A process that ends before either, in a folder that held no
run, writes what it kept when the handler closes: a failed first start still leaves its log.
"""

from __future__ import annotations

import logging

__all__ = ["RunLogHandler", "accept_run_log", "refuse_run_log"]


class RunLogHandler(logging.FileHandler):
    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = True, errors=None):
        super().__init__(filename, mode, encoding, delay=True, errors=errors)  # never opened before it is accepted
        self.pending: list[logging.LogRecord] | None = []  # None once accepted
        self.refused = False

    def emit(self, record: logging.LogRecord) -> None:
        if self.refused:
            return
        if self.pending is not None:
            self.pending.append(record)
            return
        super().emit(record)

    def accept(self) -> None:
        """Write the records kept so far, and every later one as it comes."""
        pending, self.pending = self.pending, None
        if not self.refused:
            for record in pending or []:
                super().emit(record)

    def refuse(self) -> None:
        """Drop the records kept so far and every later one: nothing of this start reaches the file."""
        self.refused, self.pending = True, None

    def close(self) -> None:
        if self.pending:  # neither accepted nor refused (a failure before the checks in a fresh folder)
            self.accept()
        super().close()


def _handlers() -> list[RunLogHandler]:
    return [h for h in logging.getLogger().handlers if isinstance(h, RunLogHandler)]


def accept_run_log() -> None:
    """The start passed its checks: the run's log file gets this start's records."""
    for handler in _handlers():
        handler.accept()


def refuse_run_log() -> None:
    """The start was refused: its records never reach the run's log file."""
    for handler in _handlers():
        handler.refuse()
