"""`tnlm finetune CONFIG [key=value ...]` (SFT on dialogues, full or LoRA) and `tnlm merge-lora BASE ADAPTER OUT`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer


def finetune(
    config: Path = typer.Argument(..., help="Fine-tuning YAML (see configs/finetune/)."),
    overrides: list[str] = typer.Argument(
        None, help="Settings over the file, e.g. model.name=runs/tnl-tiny/model method=full train.steps=100."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the config's output directory from its newest checkpoint."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved configuration and exit."),
) -> None:
    """Fine-tune a model on chat dialogues (loss on every answer), fully or with LoRA adapters; Ctrl-C saves
    a checkpoint and --resume continues exactly where it stopped."""
    from tnlm.training import Interrupted
    from tnlm.training.finetune import finetune as run_finetune
    from tnlm.training.finetune import load_finetune_config

    cfg = load_finetune_config(config, overrides or [])
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    try:
        result = run_finetune(cfg, resume=resume)
    except Interrupted as stop:
        command = shlex.join(["tnlm", "finetune", str(config), *(overrides or []), "--resume"])
        typer.echo(f"stopped: {stop}. Resume with: {command}", err=True)
        sys.exit(stop.exit_code)
    what = "adapter" if cfg.method == "lora" else "model"
    typer.echo(f"step {result.step}: validation loss {result.val_loss:.4f}; {what}: {result.model_dir}")


def merge_lora(
    base: str = typer.Argument(..., help="The model directory the adapter was trained on."),
    adapter: Path = typer.Argument(..., help="The adapter folder of a LoRA run (RUN/adapter), in peft's format."),
    out: Path = typer.Argument(..., help="Where to write the merged model directory (with the tokenizer)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it holds something already."),
) -> None:
    """Merge a LoRA adapter into its base model: a plain model directory for tnlm chat, generate, eval."""
    from tnlm.training.finetune import merge_lora as run_merge

    merged = run_merge(base, adapter, out, overwrite=overwrite)
    typer.echo(f"merged model: {merged} (try: tnlm chat {merged})")
