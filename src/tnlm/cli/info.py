"""`tnlm info`: what a preset or a model directory is, and what it costs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console


def _console() -> Console:
    """A terminal's own width; logs and pipes get long lines rather than text folded at 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)


def _gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


def info(
    model: str = typer.Argument(..., help="A preset name (see `tnlm presets`) or a model directory."),
    forward: bool = typer.Option(False, "--forward", help="Also run one forward pass on random tokens (allocates the weights)."),
    seq_len: int = typer.Option(128, min=1, help="Sequence length of the --forward pass."),
) -> None:
    """Architecture, parameter counts (with and without embeddings) and weight memory."""
    from rich.table import Table

    from tnlm.models.registry import meta_model
    from tnlm.models.summary import summarize

    s = summarize(meta_model(model))
    if forward:
        _check_forward(model, seq_len, s.weight_bytes(4))
    console = _console()
    table = Table(title=f"{model} ({s.model_type})", show_header=False)
    for k, v in s.architecture.items():
        table.add_row(k, str(v))
    table.add_row("parameters", f"{s.num_params:,} ({s.num_params / 1e9:.3f}B)")
    table.add_row("non-embedding parameters", f"{s.num_non_embedding_params:,} ({s.num_non_embedding_params / 1e9:.3f}B)")
    table.add_row("weights fp32 / bf16", f"{_gib(s.weight_bytes(4))} / {_gib(s.weight_bytes(2))}")
    console.print(table)
    if forward:
        _forward_pass(model, seq_len, console)


def _check_forward(model: str, seq_len: int, weight_bytes: int) -> None:
    """Refuse a forward pass that cannot fit in memory, before printing anything."""
    import torch

    from tnlm.devices import check_fits
    from tnlm.models.registry import load_config

    logits = 2 * seq_len * load_config(model).vocab_size * 4  # float32 logits and their log-softmax
    check_fits(weight_bytes + logits, torch.device("cpu"), what=f"a forward pass of {model} over {seq_len} tokens")


def _forward_pass(model: str, seq_len: int, console: Console) -> None:
    import torch

    from tnlm.cli.options import quiet_transformers
    from tnlm.models.registry import create_model

    quiet_transformers()
    m = create_model(model, seed=0).eval()
    ids = torch.randint(3, m.config.vocab_size, (1, seq_len))
    start = time.perf_counter()
    with torch.no_grad():
        out = m(ids, labels=ids, use_cache=False)
    ms = (time.perf_counter() - start) * 1000
    console.print(
        f"forward pass: {seq_len} random tokens -> logits {tuple(out.logits.shape)}, loss {out.loss.item():.3f} "
        f"(random weights: ln V = {torch.log(torch.tensor(float(m.config.vocab_size))).item():.3f}), {ms:.0f} ms"
    )


def presets() -> None:
    """List the model presets."""
    from rich.table import Table

    from tnlm.models.registry import PRESETS, meta_model
    from tnlm.models.summary import summarize

    table = Table(title="presets")
    table.add_column("name")
    table.add_column("family")
    table.add_column("parameters", justify="right")
    table.add_column("description")
    for name, p in sorted(PRESETS.items()):
        n = summarize(meta_model(name)).num_params
        table.add_row(name, p.family.config_class.model_type, f"{n / 1e6:,.1f}M", p.description)
    _console().print(table)
