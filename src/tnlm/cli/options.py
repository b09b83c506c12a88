"""Options and loading shared by the commands that run a model (generate and chat; train, eval and
serve can use them too): one help text per option, and every cheap check (dtype, device, config,
tokenizer) before the weights load."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from torch import nn

    from tnlm.generation.tokenizer import TextTokenizer



def _model_exists(value: str) -> str:
    """A MODEL that names a path is checked before torch is imported (seconds), so a typo fails at once."""
    from tnlm.errors import CheckpointError

    path = Path(value).expanduser()
    if ("/" in value or value.startswith((".", "~"))) and not path.is_dir():
        what = "is a file, not a model directory (a folder with config.json)" if path.exists() else "does not exist"
        raise CheckpointError(f"model directory {value} {what}; check the path, or use a preset "
                              "(`tnlm presets` lists them)")
    return str(Path(value).expanduser()) if value.startswith("~") else value


MODEL_ARG = typer.Argument(
    ..., metavar="MODEL", callback=_model_exists,
    help="A preset name (random weights, byte tokenizer; see `tnlm presets`) or a model directory.",
)  # fmt: skip
TOKENIZER = typer.Option(
    None, "--tokenizer", metavar="DIR",
    help="Tokenizer folder (e.g. from `tnlm tokenizer train`); default: the model directory's own, or the "
    "byte tokenizer for a preset.",
)  # fmt: skip
DTYPE = typer.Option("float32", help="float32 or bfloat16 (bfloat16 is very slow on most CPUs).")
DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:N or mps.")


def quiet_transformers() -> None:
    """No transformers progress bars for loading or saving weights: tnlm prints its own lines."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_model(model: str, *, tokenizer: Path | None, dtype: str, device: str) -> tuple[nn.Module, TextTokenizer]:
    """The model (eval mode) and its tokenizer. Everything a user can get wrong is checked before the
    weights are read: the dtype and device names, the config, and the tokenizer."""
    from tnlm.devices import check_fits, resolve_device, resolve_dtype
    from tnlm.generation.tokenizer import load_tokenizer, tokenizer_from_folder
    from tnlm.models.registry import create_model, load_config, meta_model
    from tnlm.models.summary import summarize

    torch_dtype, torch_device = resolve_dtype(dtype), resolve_device(device)
    vocab_size = load_config(model).vocab_size
    if tokenizer is not None:
        tok = tokenizer_from_folder(tokenizer, vocab_size=vocab_size)
    else:
        tok = load_tokenizer(model, vocab_size=vocab_size)
    nbytes = summarize(meta_model(model)).weight_bytes(torch_dtype.itemsize)
    check_fits(nbytes, torch_device, what=f"the weights of {model} in {dtype}")  # before they swap or kill
    quiet_transformers()
    return create_model(model, dtype=torch_dtype, device=torch_device, seed=0).eval(), tok
