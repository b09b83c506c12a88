"""`tnlm compare CONFIG [key=value ...]`: several models on the same data, seed and token budget, one report."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tnlm.interrupt import Interrupted, on_interrupt

if TYPE_CHECKING:
    from tnlm.compare import CompareConfig


def compare(
    config: Path = typer.Argument(..., help="Comparison YAML (see configs/compare/)."),
    overrides: list[str] = typer.Argument(
        None, help="Settings over the file, e.g. training.data.path=data/packed budget.tokens=500000 output=runs/cmp."
    ),
    print_config: bool = typer.Option(False, "--print-config", help="Print each model's training configuration and exit."),
) -> None:
    """Train models on the same data, seed and token budget; evaluate, time and report them side by side.
    Rerun the same command after Ctrl-C: finished models are kept, an interrupted one resumes."""
    from tnlm.compare import load_compare_config

    cfg = load_compare_config(config, overrides or [])
    if print_config:
        for entry in cfg.models:
            typer.echo(f"# {entry.name}\n{cfg.train_config(entry).to_yaml()}")
        return
    command = shlex.join(["tnlm", "compare", str(config), *(overrides or [])])
    _run(cfg, hint=f"rerun `{command}` to continue: finished models are kept, the interrupted one resumes")


def _run(cfg: CompareConfig, *, hint: str) -> None:
    from tnlm.compare import compare as run_compare
    from tnlm.training import Interrupted as TrainingStopped

    @on_interrupt(hint)
    def body() -> dict:
        try:
            return run_compare(cfg)
        except TrainingStopped:
            raise Interrupted(hint) from None

    report = body()
    if report.get("verdict"):
        typer.echo(report["verdict"]["text"])
