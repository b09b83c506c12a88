"""Errors a user can cause. The CLI prints their message (which says what to do) without a traceback.

Each is also the built-in exception it refines (ValueError, OSError), so `except ValueError` keeps working.
"""


class TnlmError(Exception):
    """Base class of tnlm's user-facing errors."""


class ConfigError(TnlmError, ValueError):
    """A configuration, preset name or option is invalid."""


class InputError(TnlmError, ValueError):
    """An argument does not fit what a function takes: a tensor of the wrong shape, inconsistent options."""


class CheckpointError(TnlmError, OSError):
    """A model directory is missing, incomplete, of another model, or disagrees with its config."""


class DataError(TnlmError, ValueError):
    """A problem with the user's data or data configuration."""
