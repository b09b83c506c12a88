"""The `tnlm` command: its table of commands and the one error path.

Adding a command is one line in COMMANDS: its name and "module:attribute", where the attribute is a
plain typed function (a command) or a `typer.Typer` (a command group). Command modules import only
typer (and the standard library) at the top; torch, transformers and the rest of tnlm are imported
inside the command functions, so `tnlm --help` and every light command start in well under a second
(tests/cli/test_startup.py checks that `tnlm --help` imports no torch).

Errors: a command raises a `tnlm.errors.TnlmError` (or lets an OSError through) and `main` prints
`error: <message>` on one line and returns 2; usage errors (a missing argument, a bad number) look
the same. Ctrl-C prints `interrupted: <hint>` and returns 130 (see `tnlm.interrupt.on_interrupt`).
"""

from __future__ import annotations

import errno
import importlib
import sys
from collections.abc import Sequence

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer >= 0.26 vendors click

import tnlm
from tnlm.cli import run  # noqa: F401  (the console script; scripts installed as tnlm.cli.main:run keep working)
from tnlm.cli.app import TnlmCommand, TnlmGroup, adopt
from tnlm.errors import TnlmError
from tnlm.interrupt import Interrupted

COMMANDS: tuple[tuple[str, str], ...] = (
    ("info", "tnlm.cli.info:info"),
    ("presets", "tnlm.cli.info:presets"),
    ("generate", "tnlm.cli.generate:generate"),
    ("chat", "tnlm.cli.generate:chat"),
    ("convert", "tnlm.cli.convert:convert"),
    ("data", "tnlm.cli.data:data_app"),
    ("tokenizer", "tnlm.cli.data:tokenizer_app"),
    ("eval", "tnlm.cli.eval:evaluate"),
    ("train", "tnlm.cli.train:train"),
    ("finetune", "tnlm.cli.finetune:finetune"),
    ("merge-lora", "tnlm.cli.finetune:merge_lora"),
    ("compare", "tnlm.cli.compare:compare"),
    ("quickstart", "tnlm.cli.quickstart:quickstart"),
    ("serve", "tnlm.cli.serve:serve"),
    ("export", "tnlm.cli.export:export"),
)

app = typer.Typer(
    name="tnlm",
    cls=TnlmGroup,
    help="TransNormerLLM and its baselines: models, data, tokenizers, training, fine-tuning, evaluation, generation, chat and serving.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tnlm {tnlm.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """The options before any command."""


def _register(name: str, target: str) -> None:
    module, attribute = target.split(":")
    obj = getattr(importlib.import_module(module), attribute)
    if isinstance(obj, typer.Typer):
        app.add_typer(adopt(obj), name=name)
    else:
        app.command(name, cls=TnlmCommand)(obj)


for _name, _target in COMMANDS:
    _register(_name, _target)

_OS_ADVICE = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.EROFS: "the file system is read-only; choose another location",
    errno.ENOSPC: "free some disk space or choose another location",
    errno.EDQUOT: "your disk quota is full; free some space or choose another location",
    errno.ENOENT: "check the path",
    errno.EISDIR: "give a file, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
}


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _os_error_message(err: OSError) -> str:
    what = err.strerror or type(err).__name__
    where = f": {err.filename}" if err.filename else ""
    advice = _OS_ADVICE.get(err.errno or 0)
    return f"{what}{where}" + (f"; {advice}" if advice else "")


def _out_of_memory(err: BaseException) -> bool:
    """MemoryError, torch's OutOfMemoryError (a GPU), or its CPU allocator's failure (a RuntimeError)."""
    return (isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError"
            or "can't allocate memory" in str(err))


def _usage_message(err: UsageError) -> str:
    command = err.ctx.command_path if err.ctx is not None else "tnlm"
    return f"{_one_line(err.format_message())} (see `{command} -h`)"


def _error(message: str) -> int:
    typer.secho(f"error: {_one_line(message)}", err=True, fg=typer.colors.RED)
    return 2


def _interrupted(hint: str | None) -> int:
    start = "\n" if sys.stderr.isatty() else ""  # below a progress bar that Ctrl-C cut short
    typer.echo(start + (f"interrupted: {hint}" if hint else "interrupted"), err=True)
    return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run `tnlm` with these arguments (default: sys.argv[1:]) and return its exit status."""
    try:
        status = app(args=list(sys.argv[1:] if argv is None else argv), prog_name="tnlm", standalone_mode=False) or 0
    except NoArgsIsHelpError as err:
        typer.echo(err.format_message())
        return 2
    except UsageError as err:
        return _error(_usage_message(err))
    except TnlmError as err:
        return _error(str(err))
    except OSError as err:
        return _error(_os_error_message(err))
    except (MemoryError, RuntimeError) as err:
        if not _out_of_memory(err):
            raise
        return _error(f"out of memory ({_one_line(str(err))[:160]}); use a smaller model, a shorter input or "
                      "fewer tokens, or a machine with more memory")
    except (Interrupted, KeyboardInterrupt) as err:
        return _interrupted(getattr(err, "hint", None))
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    if status == 130:  # typer's own exit for a Ctrl-C while it parses the command line
        _interrupted(None)
    return status
