"""Errors in what the user gave (annotation files, images, feature files, checkpoints, options).

Each such error derives from `UserError`; an entry point wrapped in `report_user_errors` ends
with its message on one line and exit status 1, not a traceback through Lightning. The classes
live beside the code that raises them; this module only knows the base, so it imports nothing.
"""

from __future__ import annotations

import functools
import logging
import sys

log = logging.getLogger("vlr")


class UserError(Exception):
    """Something the user gave cannot be used; the message names the file, field or option."""


class ConfigError(UserError, ValueError):
    """An option has a value vlr cannot use (``data.batch_size=0``, a negative temperature, ...)."""


def message_of(err: BaseException) -> str:
    """The message itself; for an error re-raised from a DataLoader worker, the original's last line."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith(type(err).__name__) else last
    return text


def _user_error_of(err: BaseException) -> BaseException | None:
    """``err`` when it is a user error; for Hydra's wrapper of what a constructor raised
    (InstantiationException) or a DataLoader worker's re-raise, the user error it carries."""
    if isinstance(err, UserError):
        return err
    if type(err).__name__ == "InstantiationException" and isinstance(err.__cause__, UserError):
        return err.__cause__
    return None


def report_user_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as err:
            cause = _user_error_of(err)
            if cause is None:
                raise
            # once on the console (stderr), and in the run's log file (Hydra's train.log) when there is one
            print(f"error: {message_of(cause)}", file=sys.stderr)
            record = log.makeRecord(
                log.name, logging.ERROR, __file__, 0, "%s: %s", (type(cause).__name__, message_of(cause)), None
            )
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.FileHandler):
                    handler.handle(record)
            sys.exit(1)

    return wrapper
