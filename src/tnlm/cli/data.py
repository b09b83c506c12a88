"""`tnlm data ...` and `tnlm tokenizer ...`: thin commands over `tnlm.data`."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tnlm.interrupt import on_interrupt

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from tnlm.data.sources import Source

data_app = typer.Typer(help="Clean, deduplicate and pack pretraining data.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train BPE tokenizers.", no_args_is_help=True)

RESUME = "rerun the same command to resume; finished shards are kept"
ENGINES = ("tnlm", "datatrove")


@data_app.command("run")
@on_interrupt(RESUME)
def run(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/data/)."),
    inputs: list[str] = typer.Option(
        None, "--input", "-i", metavar="PATH",
        help="Read these files, folders or globs instead of the config's source paths (repeatable).",
    ),  # fmt: skip
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here instead of the config's output."),
    workers: int = typer.Option(0, min=0, help="Processes (0: the config's `workers`)."),
    engine: str = typer.Option("tnlm", help="tnlm (in this process) or datatrove (its local, Slurm or Ray executor)."),
    executor: str = typer.Option("local", help="With --engine datatrove: local, slurm or ray."),
    tasks: int = typer.Option(0, min=0, help="With --engine datatrove: tasks (0: one per shard of the source)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a cleaning pipeline; rerun the same command to resume after an interruption."""
    from dataclasses import asdict

    from tnlm.data.extras import modules_for_pipeline, require
    from tnlm.data.pipeline import PipelineConfig, run_pipeline
    from tnlm.errors import DataError

    if engine not in ENGINES:
        raise DataError(f"--engine must be {' or '.join(ENGINES)}, not {engine!r}")
    cfg = PipelineConfig.from_yaml(config)
    if inputs:
        cfg.source = _with_inputs(cfg.source, inputs)
    if output is not None:
        cfg.output = str(output)
    require(modules_for_pipeline(asdict(cfg), engine=engine), what=f"the pipeline {config}")
    if engine == "datatrove":
        from tnlm.data.datatrove_engine import run_datatrove
        from tnlm.interrupt import call_isolated

        # Ctrl-C stops datatrove's pool (or the local Ray cluster) as a group
        report = call_isolated(run_datatrove, cfg, executor=executor, tasks=tasks or None, workers=workers or None)
        if report is None:
            typer.echo(f"submitted to Slurm; when the jobs have finished: tnlm data report {cfg.output}")
            return
    else:
        if executor != "local" or tasks:
            raise DataError("--executor and --tasks choose how datatrove runs: add --engine datatrove")
        report = run_pipeline(cfg, workers=workers or None, progress=not quiet)
    report.print()
    typer.echo(f"report: {Path(cfg.output) / 'report.json'}")


def _with_inputs(source: dict, inputs: list[str]) -> dict:
    """The config's source reading `inputs` instead: a files source keeps its other options."""
    kept = {k: v for k, v in source.items() if k not in ("type", "paths")} if source.get("type", "files") == "files" else {}
    return {"type": "files", **kept, "paths": list(inputs)}


@data_app.command("report")
def report(output: Path = typer.Argument(..., help="A pipeline's output folder.")) -> None:
    """Print the report of a finished run."""
    from tnlm.data.report import Report
    from tnlm.data.step import StepStats
    from tnlm.errors import DataError

    path = output / "report.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: run `tnlm data run` to make it")
    row = json.loads(path.read_text(encoding="utf-8"))
    Report(steps=[StepStats.from_json(s) for s in row["steps"]], output=row["output"]).print()


@data_app.command("steps")
def steps() -> None:
    """List the steps a pipeline YAML can use, with what each does."""
    from tnlm.data.registry import STEPS

    width = max(60, min(shutil.get_terminal_size().columns, 120))
    for name, cls in sorted(STEPS.items()):
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        typer.echo(textwrap.fill(summary, width, initial_indent=f"{name:18s}  ", subsequent_indent=" " * 20,
                                  break_on_hyphens=False))


@data_app.command("pack")
@on_interrupt(RESUME)
def pack(
    inputs: list[str] = typer.Argument(..., metavar="INPUTS", help="Files, folders or globs of JSON Lines documents."),
    tokenizer: Path = typer.Option(..., metavar="DIR", help="Tokenizer folder (tnlm tokenizer train)."),
    output: Path = typer.Option(..., help="Folder for the token shards."),
    val_fraction: float = typer.Option(0.01, min=0.0, max=1.0, help="Share of documents (by id hash) for validation."),
    text_key: str = typer.Option("text", help="JSON field holding the text."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete the shards already in --output and pack from scratch."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Tokenise documents into memory-mapped token shards (resumable)."""
    from tnlm.data.extras import modules_for_paths, require
    from tnlm.data.pack import pack as pack_documents

    require(modules_for_paths(inputs), what="reading these inputs")
    meta = pack_documents(inputs, tokenizer, output, val_fraction=val_fraction, text_key=text_key,
                          overwrite=overwrite, progress=not quiet)
    for split, totals in meta["splits"].items():
        typer.echo(f"{split}: {totals['documents']} documents, {totals['tokens']} tokens ({meta['dtype']})")


@tokenizer_app.command("train")
@on_interrupt("nothing was saved; rerun the command to train again")
def train(
    inputs: list[str] = typer.Argument(None, metavar="INPUTS", help="Files, folders or globs (default: the built-in corpus)."),
    output: Path = typer.Option(..., help="Folder for the Hugging Face tokenizer."),
    vocab_size: int = typer.Option(32000, min=1, help="Vocabulary size, including 256 byte tokens and specials."),
    text_key: str = typer.Option("text", help="JSON field holding the text."),
    max_docs: int = typer.Option(0, min=0, help="Use at most this many documents (0: all)."),
    held_out_paths: list[str] = typer.Option(None, "--held-out", metavar="PATH", help="Evaluation files (default: every 20th document)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a tokenizer already in --output."),
) -> None:
    """Train a byte-fallback BPE tokenizer; reports characters per token on held-out English and Chinese."""
    from tnlm.data.extras import modules_for_paths, require
    from tnlm.data.sources import BuiltinSource, FileSource
    from tnlm.data.tokenizer import chars_per_token, check_output, save_tokenizer, split_by_language
    from tnlm.interrupt import call_isolated

    require(modules_for_paths([*(inputs or []), *(held_out_paths or [])]), what="reading these inputs")
    check_output(output, overwrite=overwrite)  # before the training, not after it
    source = FileSource(paths=inputs, text_key=text_key) if inputs else BuiltinSource(kind="all")
    extra = FileSource(paths=held_out_paths, text_key=text_key) if held_out_paths else None
    # the Rust trainer never looks for Ctrl-C: it runs in a child process that Ctrl-C kills
    tok, evaluation = call_isolated(_train_tokenizer, source, hold_out=extra is None, max_docs=max_docs,
                                    vocab_size=vocab_size, show_progress=sys.stdout.isatty())
    save_tokenizer(tok, output, overwrite=overwrite)
    if extra:
        evaluation = list(doc.text for doc in extra.documents())
    typer.echo(f"saved {tok.get_vocab_size()} tokens to {output}")
    for language, held in zip(("English", "Chinese"), split_by_language(evaluation)):
        if held:
            typer.echo(f"{language}: {chars_per_token(tok, held):.2f} characters per token on {len(held)} held-out documents")


def _train_tokenizer(source: Source, *, hold_out: bool, max_docs: int, vocab_size: int,
                     show_progress: bool) -> tuple[Tokenizer, list[str]]:
    """Read the source and train; returns the tokenizer and the held-out texts (every 20th document,
    when `hold_out`)."""
    from tnlm.data.tokenizer import held_out, train_tokenizer

    texts = islice((doc.text for doc in source.documents()), max_docs or None)
    training, evaluation = held_out(texts) if hold_out else (texts, [])
    return train_tokenizer(training, vocab_size=vocab_size, show_progress=show_progress), evaluation
