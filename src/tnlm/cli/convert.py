"""`tnlm convert`: Hugging Face Llama checkpoints to tnlm's Transformer family and back."""

from __future__ import annotations

from pathlib import Path

import typer


def convert(
    src: Path = typer.Argument(..., help="Model directory to convert (a LlamaForCausalLM or a tnlm Transformer)."),
    dst: Path = typer.Argument(..., help="New model directory to write."),
    to: str = typer.Option(None, "--to", help="Target format, 'tnlm' or 'llama'; default: the other one."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace dst if it exists."),
) -> None:
    """Convert between LlamaForCausalLM and tnlm's Transformer (weights copy one to one; RoPE scaling
    default/linear/llama3 converts; ALiBi and NTK have no Llama form)."""
    from tnlm.cli.options import quiet_transformers
    from tnlm.models.convert import convert_checkpoint

    quiet_transformers()
    target = convert_checkpoint(src, dst, to=to, overwrite=overwrite)
    typer.echo(f"wrote {target} model to {dst}")
