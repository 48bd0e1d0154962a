"""User-facing errors: one line that names the problem and what is allowed."""

__all__ = ["TinyclError", "ConfigError", "DataError", "ModelError"]


class TinyclError(Exception):
    """An error caused by the user's input. The CLI prints it as one line and exits with status 2."""


class ConfigError(TinyclError):
    """A configuration value or key that is not allowed."""


class DataError(TinyclError):
    """A data file that is missing, truncated or not in the expected format."""


class ModelError(TinyclError):
    """A model file or description that tinycl cannot use (unsupported op, dtype, corrupt file)."""
