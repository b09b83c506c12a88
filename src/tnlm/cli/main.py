"""Entry point of the `tnlm` command.

Adding a command is one line in COMMANDS: its name and "module:attribute", where the attribute is a
plain typed function (a command) or a `typer.Typer` (a command group). Command modules import only
typer (and the standard library) at the top; torch, transformers and the rest of tnlm are imported
inside the command functions, so `tnlm --help` and every light command start in well under a second
(tests/cli/test_startup.py checks that `tnlm --help` imports no torch).
"""

from __future__ import annotations

import importlib
import sys

import typer

import tnlm
from tnlm.errors import TnlmError

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
)

app = typer.Typer(
    name="tnlm",
    help="TransNormerLLM and its baselines: models, data, training, evaluation, generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tnlm {tnlm.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """tnlm: efficient large language models on a laptop CPU or a GPU cluster."""


def _register(name: str, target: str) -> None:
    module, attribute = target.split(":")
    obj = getattr(importlib.import_module(module), attribute)
    if isinstance(obj, typer.Typer):
        app.add_typer(obj, name=name)
    else:
        app.command(name)(obj)


for _name, _target in COMMANDS:
    _register(_name, _target)


def run() -> None:
    """Console-script entry: user errors print one clear line and exit 2, no traceback."""
    try:
        app()  # standalone: click reports usage errors itself
    except TnlmError as e:
        typer.secho(f"error: {e}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
