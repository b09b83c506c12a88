"""`tnlm train CONFIG [key=value ...]`: pretrain a model on packed token shards."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import typer


def train(
    config: Path = typer.Argument(..., help="Training YAML (see configs/train/)."),
    overrides: list[str] = typer.Argument(None, help="Settings over the file, e.g. optimizer.lr=3e-4 train.steps=200."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in the config's output directory from its newest checkpoint."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved configuration and exit."),
) -> None:
    """Train a model; Ctrl-C (or SIGTERM) saves a checkpoint, and --resume continues exactly where it stopped."""
    from tnlm.training import Interrupted, load_train_config
    from tnlm.training import train as run_training

    cfg = load_train_config(config, overrides or [])
    if print_config:
        typer.echo(cfg.to_yaml(), nl=False)
        return
    try:
        result = run_training(cfg, resume=resume)
    except Interrupted as stop:
        launcher = ["tnlm"]
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: resume the same way
            launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '1')}", "-m", "tnlm"]
        command = shlex.join([*launcher, "train", str(config), *(overrides or []), "--resume"])
        if _first_process():
            typer.echo(f"stopped: {stop}. Resume with: {command}", err=True)
        sys.exit(stop.exit_code)
    if _first_process():
        typer.echo(f"step {result.step}: validation loss {result.val_loss:.4f}; model: {result.model_dir}")


def _first_process() -> bool:
    """Under torchrun the first process speaks for all."""
    return os.environ.get("RANK", "0") == "0"
