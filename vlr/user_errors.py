"""Errors in what the user gave (annotation files, images, feature files, options) end a
command with one clear message and exit status 1, not a traceback through Lightning."""

from __future__ import annotations

import functools
import logging
import sys

from vlr.checkpoints import CheckpointError
from vlr.data.images import ImageLoadError
from vlr.data.karpathy import AnnotationError
from vlr.errors import ConfigError
from vlr.io import SaveError
from vlr.reference.files import FeatureFileError

log = logging.getLogger("vlr")
USER_ERRORS = (AnnotationError, ImageLoadError, FeatureFileError, CheckpointError, SaveError, ConfigError)


def message_of(err: BaseException) -> str:
    """The message itself; for an error re-raised from a DataLoader worker, the original's last line."""
    text = str(err)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith(type(err).__name__) else last
    return text


def report_user_errors(main):
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as err:
            # Hydra wraps what a constructor raises (InstantiationException): report the cause
            wrapped = type(err).__name__ == "InstantiationException"
            cause = err if isinstance(err, USER_ERRORS) else (err.__cause__ if wrapped else None)
            if not isinstance(cause, USER_ERRORS):
                raise
            log.error("%s: %s", type(cause).__name__, message_of(cause))
            print(f"error: {message_of(cause)}", file=sys.stderr)
            sys.exit(1)

    return wrapper


# command-line options of earlier versions, and what replaced them
LEGACY_OVERRIDES = {
    "objective.teacher": "the reference is a config group of its own: reference=frozen_init | features | oracle",
    "objective.teacher_features": "use reference=features reference.path=<directory of feature files>",
    "data.teacher": "the reference is a config group of its own: reference=frozen_init | features | oracle",
    "data.teacher_features": "use reference=features reference.path=<directory of feature files>",
    "model.teacher_cache": "use reference.cache=true | false | auto (with reference=frozen_init)",
}


def refuse_legacy_overrides(main):
    """Outside ``hydra.main``: an option of an earlier version ends the command in one line that
    says what replaced it (Hydra would only say the key is not in the config)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        for arg in sys.argv[1:]:
            key = arg.lstrip("+~").split("=", 1)[0]
            if key in LEGACY_OVERRIDES:
                print(f"error: {key} no longer exists: {LEGACY_OVERRIDES[key]}", file=sys.stderr)
                sys.exit(1)
        return main(*args, **kwargs)

    return wrapper
