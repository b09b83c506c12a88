"""`tnlm export RUN_DIR OUT`: a run's checkpoint (written by any number of processes) as a plain Hugging
Face model directory."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    run: Path = typer.Argument(..., help="A run directory (its newest checkpoint is exported) or one of its "
                                         "checkpoints/step-N folders."),  # fmt: skip
    out: Path = typer.Argument(..., help="The model directory to write (config.json, model.safetensors, tokenizer)."),
    step: int = typer.Option(None, "--step", help="Export the checkpoint of this step instead of the newest."),
    tokenizer: Path = typer.Option(None, "--tokenizer", help="Tokenizer folder to copy (default: the run's own)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it exists."),
) -> None:
    """Turn a training checkpoint (FSDP, tensor or sequence parallel, or one process) into a model
    directory that `tnlm generate`, `tnlm eval` and transformers' from_pretrained load; one process."""
    from tnlm.cli.options import quiet_transformers
    from tnlm.training.checkpoint import export_checkpoint, find_checkpoint

    checkpoint = find_checkpoint(run, step=step)
    if out.exists() and not overwrite:
        from tnlm.errors import ConfigError

        raise ConfigError(f"{out} already exists: choose another folder, or add --overwrite to replace it")
    quiet_transformers()
    export_checkpoint(checkpoint, out, tokenizer=tokenizer)
    typer.echo(f"exported {checkpoint} to {out}")
