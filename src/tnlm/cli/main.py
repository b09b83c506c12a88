"""Entry point of the `tnlm` command. Each command group lives in its own module and is added here."""

from __future__ import annotations

import typer

import tnlm

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
