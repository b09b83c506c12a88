"""`tnlm quickstart [--minutes N] [--data PATH] [--output DIR]`: from raw text to compared, fine-tuned and
chatting models in about N minutes on a laptop CPU."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from tnlm.interrupt import Interrupted, on_interrupt

EXTRAS = ("matplotlib", "peft")  # with what the cleaning pipeline needs: the quickstart extra (plots, LoRA)
SCALE = None  # tnlm.quickstart.Scale of the models and measurements (None: the default, tnl-tiny's)


def quickstart(
    minutes: float = typer.Option(10.0, "--minutes", "-m", help="Time budget in minutes (training is sized to fit)."),
    data: str | None = typer.Option(
        None, "--data", "-d", metavar="PATH", help="Your text: .txt/.jsonl files, a folder or a glob (default: the built-in corpus)."
    ),
    output: Path = typer.Option(Path("quickstart"), "--output", "-o", help="Folder for everything it makes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Clean text, train a tokenizer, compare a TransNormer with a Transformer of the same size, fine-tune a
    chat model, and write a summary. Ctrl-C stops it; the same command continues where it stopped."""
    from tnlm.quickstart import Options, Scale
    from tnlm.quickstart.plan import STATE

    options = Options(output=str(output), minutes=minutes, data=data, scale=SCALE or Scale())
    options.check()
    if (output / STATE).is_file() and _finished(options):
        return
    _require_extras(options)
    args = ["tnlm", "quickstart", "--minutes", f"{minutes:g}", "--output", str(output)]
    command = shlex.join(args + (["--data", data] if data else []))
    _run(options, hint=f"run `{command}` again to continue where it stopped (finished stages are kept)", quiet=quiet)


def _require_extras(options) -> None:
    """Every package the quickstart needs, checked before any work."""
    import sys

    from tnlm.data.extras import modules_for_pipeline
    from tnlm.errors import ConfigError
    from tnlm.quickstart.stages import pipeline_config

    needed = sorted({*EXTRAS, *modules_for_pipeline(pipeline_config(options, Path(options.output)))})
    missing = [m for m in needed if not _importable(m, sys.modules)]
    if missing:
        raise ConfigError(f"tnlm quickstart needs {', '.join(missing)}, not installed here: "
                          "pip install -e '.[quickstart]' (or pip install 'tnlm[quickstart]')")  # fmt: skip


def _importable(module: str, loaded: dict) -> bool:
    import importlib.util

    return loaded[module] is not None if module in loaded else importlib.util.find_spec(module) is not None


def _finished(options) -> bool:
    from tnlm.quickstart.plan import State

    state = State.claim(Path(options.output), options.settings())
    if not state.finished:
        return False
    typer.echo(f"this quickstart is finished: its summary is {Path(options.output) / 'README.md'}")
    return True


def _run(options, *, hint: str, quiet: bool) -> None:
    from tnlm.quickstart import quickstart as run_quickstart
    from tnlm.quickstart.summary import terminal_summary
    from tnlm.training import Interrupted as TrainingStopped

    def log(text: str) -> None:
        from tqdm import tqdm

        tqdm.write(text)

    @on_interrupt(hint)
    def body() -> None:
        try:
            run_quickstart(options, log=log, progress=not quiet)
        except TrainingStopped:
            raise Interrupted(hint) from None

    body()
    typer.echo("\n" + terminal_summary(Path(options.output)))
