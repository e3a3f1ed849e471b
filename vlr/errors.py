"""The error a bad option raises: one line naming the option, reported by `vlr.user_errors`."""


class ConfigError(ValueError):
    """An option has a value vlr cannot use (``data.batch_size=0``, a negative temperature, ...)."""
