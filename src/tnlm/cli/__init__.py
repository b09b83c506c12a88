"""The `tnlm` command: a thin shell over the library, one module per command group (see main.py)."""

from __future__ import annotations

import signal
import sys
import warnings


def one_line_warnings() -> None:
    """Show a UserWarning (what tnlm warns with: a fallback, a cache it could not write) as one line,
    `warning: ...`, instead of Python's file:line form followed by a line of source, usually not tnlm's.
    Other categories (deprecations for developers) keep Python's form."""
    python_format = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None) -> str:
        if issubclass(category, UserWarning):
            return f"warning: {message}\n"
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


def run() -> None:
    """The `tnlm` console script (also `python -m tnlm`). It imports the command table inside the
    try, so that even a Ctrl-C while the command starts up ends with one line, not a traceback."""
    try:
        from tnlm.devices import tune_allocator

        tune_allocator()  # freed activations stay in the heap for the next layer (see its docstring)
        one_line_warnings()
        from tnlm.cli.main import main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    status = main()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a Ctrl-C during the exit no longer changes the outcome
    sys.exit(status)
