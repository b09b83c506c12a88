"""Errors a user can cause. The CLI prints their message (which says what to do) without a traceback."""


class TnlmError(Exception):
    """Base class of tnlm's user-facing errors."""


class ConfigError(TnlmError, ValueError):
    """A configuration, preset name or option is invalid."""


class CheckpointError(TnlmError, OSError):
    """A model directory is missing, incomplete, of another model, or disagrees with its config."""
