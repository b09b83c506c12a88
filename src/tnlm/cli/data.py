"""`tnlm data ...` and `tnlm tokenizer ...`: thin commands over `tnlm.data`."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import typer

data_app = typer.Typer(help="Clean, deduplicate and pack pretraining data.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train and inspect BPE tokenizers.", no_args_is_help=True)


@data_app.command("run")
def run(
    config: Path = typer.Argument(..., help="Pipeline YAML (see configs/data/)."),
    workers: int = typer.Option(0, help="Processes (0: the config's `workers`)."),
    engine: str = typer.Option("tnlm", help="tnlm (resumable, global steps) or datatrove (its local executor)."),
    quiet: bool = typer.Option(False, help="No progress bars."),
) -> None:
    """Run a cleaning pipeline; rerun the same command to resume after an interruption."""
    from tnlm.data.pipeline import PipelineConfig, run_pipeline

    cfg = PipelineConfig.from_yaml(config)
    if engine == "datatrove":
        from tnlm.data.datatrove_adapter import datatrove_executor

        datatrove_executor(cfg, workers=workers or cfg.workers).run()
        return
    if engine != "tnlm":
        raise typer.BadParameter("engine must be tnlm or datatrove")
    report = run_pipeline(cfg, workers=workers or None, progress=not quiet)
    report.print()
    typer.echo(f"report: {Path(cfg.output) / 'report.json'}")


@data_app.command("report")
def report(output: Path = typer.Argument(..., help="A pipeline's output folder.")) -> None:
    """Print the report of a finished run."""
    from tnlm.errors import DataError
    from tnlm.data.report import Report
    from tnlm.data.step import StepStats

    path = output / "report.json"
    if not path.is_file():
        raise DataError(f"{path} does not exist: run `tnlm data run` to make it")
    row = json.loads(path.read_text(encoding="utf-8"))
    Report(steps=[StepStats.from_json(s) for s in row["steps"]], output=row["output"]).print()


@data_app.command("steps")
def steps() -> None:
    """List the step names a pipeline YAML can use."""
    from tnlm.data.registry import STEPS

    for name, cls in sorted(STEPS.items()):
        typer.echo(f"{name:20s} {(cls.__doc__ or '').strip().splitlines()[0]}")


@data_app.command("pack")
def pack(
    inputs: list[str] = typer.Argument(..., help="Files, folders or globs of JSON Lines documents."),
    tokenizer: Path = typer.Option(..., help="Tokenizer folder (tnlm tokenizer train)."),
    output: Path = typer.Option(..., help="Folder for the token shards."),
    val_fraction: float = typer.Option(0.01, help="Share of documents (by id hash) for validation."),
    text_key: str = typer.Option("text", help="JSON field holding the text."),
    overwrite: bool = typer.Option(False, help="Delete the shards already in --output and pack from scratch."),
) -> None:
    """Tokenise documents into memory-mapped token shards (resumable)."""
    from tnlm.data.pack import pack as pack_documents

    meta = pack_documents(inputs, tokenizer, output, val_fraction=val_fraction, text_key=text_key, overwrite=overwrite)
    for split, totals in meta["splits"].items():
        typer.echo(f"{split}: {totals['documents']} documents, {totals['tokens']} tokens ({meta['dtype']})")


@tokenizer_app.command("train")
def train(
    inputs: list[str] = typer.Argument(None, help="Files, folders or globs (default: the built-in corpus)."),
    output: Path = typer.Option(..., help="Folder for the Hugging Face tokenizer."),
    vocab_size: int = typer.Option(32000, help="Vocabulary size, including 256 byte tokens and specials."),
    text_key: str = typer.Option("text", help="JSON field holding the text."),
    max_docs: int = typer.Option(0, help="Use at most this many documents (0: all)."),
    held_out_paths: list[str] = typer.Option(None, "--held-out", help="Evaluation files (default: every 20th document)."),
    overwrite: bool = typer.Option(False, help="Replace a tokenizer already in --output."),
) -> None:
    """Train a byte-fallback BPE tokenizer; reports characters per token on held-out English and Chinese."""
    from tnlm.data.sources import BuiltinSource, FileSource
    from tnlm.data.tokenizer import chars_per_token, check_output, held_out, save_tokenizer
    from tnlm.data.tokenizer import split_by_language, train_tokenizer

    check_output(output, overwrite=overwrite)  # before the training, not after it
    source = FileSource(paths=inputs, text_key=text_key) if inputs else BuiltinSource(kind="all")
    texts = islice((doc.text for doc in source.documents()), max_docs or None)
    training, evaluation = (texts, []) if held_out_paths else held_out(texts)
    tok = train_tokenizer(training, vocab_size=vocab_size)
    save_tokenizer(tok, output, overwrite=overwrite)
    if held_out_paths:
        extra = FileSource(paths=held_out_paths, text_key=text_key)
        evaluation = [doc.text for doc in extra.documents()]
    typer.echo(f"saved {tok.get_vocab_size()} tokens to {output}")
    for language, held in zip(("English", "Chinese"), split_by_language(evaluation)):
        if held:
            typer.echo(f"{language}: {chars_per_token(tok, held):.2f} characters per token on {len(held)} held-out documents")
