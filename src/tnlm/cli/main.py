"""Entry point of the `tnlm` command. Each command group lives in its own module and is added here."""

from __future__ import annotations

import sys

import typer

import tnlm
from tnlm.cli.convert import convert
from tnlm.cli.data import data_app, tokenizer_app
from tnlm.cli.generate import chat, generate
from tnlm.cli.info import info, presets
from tnlm.errors import TnlmError

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


app.command("info")(info)
app.command("presets")(presets)
app.command("generate")(generate)
app.command("chat")(chat)
app.command("convert")(convert)
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")


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
