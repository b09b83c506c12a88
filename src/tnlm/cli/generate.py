"""`tnlm generate` (stream a continuation) and `tnlm chat` (interactive multi-turn chat)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    import torch

    from tnlm.generation import GenerationStats
    from tnlm.generation.tokenizer import TextTokenizer

MODEL_ARG = typer.Argument(
    ..., help="A preset name (random weights, byte tokenizer) or a model directory with a tokenizer."
)
MAX_NEW = typer.Option(128, "--max-new-tokens", "-n", help="Stop after this many new tokens.")
TEMPERATURE = typer.Option(0.0, help="0 = greedy; higher = more random.")
TOP_K = typer.Option(0, help="Sample only among the k most likely tokens (0 = off).")
TOP_P = typer.Option(1.0, help="Sample only from the smallest set of tokens with this much probability (1 = off).")
REP_PENALTY = typer.Option(1.0, "--repetition-penalty", help="> 1 discourages repeating tokens (1 = off).")
SEED = typer.Option(None, help="Seed for reproducible sampling.")
DTYPE = typer.Option("float32", help="float32 or bfloat16 (bfloat16 is very slow on most CPUs).")
DEVICE = typer.Option("cpu", help="cpu, cuda, cuda:1, ...")


def _load(model: str, *, dtype: str, device: str) -> tuple[torch.nn.Module, TextTokenizer]:
    import torch

    from tnlm.generation import load_tokenizer
    from tnlm.models.registry import create_model

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise typer.BadParameter(f"dtype must be float32 or bfloat16, got {dtype!r}")
    m = create_model(model, dtype=torch_dtype, device=device, seed=0).eval()
    return m, load_tokenizer(model, vocab_size=m.config.vocab_size)


def _report(stats: GenerationStats) -> None:
    cached = f" (+{stats.cached_tokens} kept from earlier turns)" if stats.cached_tokens else ""
    typer.echo(
        f"[{stats.prompt_tokens} prompt tokens{cached}, {stats.generated_tokens} generated in "
        f"{stats.prefill_s + stats.decode_s:.2f} s: {stats.tokens_per_s:.1f} tokens/s, "
        f"{stats.ms_per_token:.1f} ms/token after the first, state {stats.state_bytes / 2**20:.2f} MiB]",
        err=True,
    )


def _to_terminal(pieces) -> None:
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


def generate(
    model: str = MODEL_ARG,
    prompt: str = typer.Option(..., "--prompt", "-p", help="Text to continue."),
    max_new_tokens: int = MAX_NEW,
    temperature: float = TEMPERATURE,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    repetition_penalty: float = REP_PENALTY,
    stop: list[str] = typer.Option([], "--stop", help="Stop before this text (repeatable)."),
    seed: int | None = SEED,
    dtype: str = DTYPE,
    device: str = DEVICE,
) -> None:
    """Continue a prompt, streaming the text; report tokens/s on stderr."""
    from tnlm.generation import GenerationResult, GenerationStats, SamplingParams, stream

    m, tok = _load(model, dtype=dtype, device=device)
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    result = GenerationResult(sequences=[], stats=GenerationStats())
    _to_terminal(stream(m, tok, prompt, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop, seed=seed,
                        result=result))
    _report(result.stats)


def chat(
    model: str = MODEL_ARG,
    system: str | None = typer.Option(None, help="A system message that opens the conversation."),
    max_new_tokens: int = MAX_NEW,
    temperature: float = TEMPERATURE,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    repetition_penalty: float = REP_PENALTY,
    seed: int | None = SEED,
    dtype: str = DTYPE,
    device: str = DEVICE,
) -> None:
    """Interactive chat with tnlm's chat template. /reset starts over, /exit (or Ctrl-D) quits.
    The decoding state carries over between turns: each turn feeds only the new message."""
    from tnlm.generation import ChatSession, GenerationResult, GenerationStats, SamplingParams

    m, tok = _load(model, dtype=dtype, device=device)
    sampling = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)
    session = ChatSession(m, tok, system=system)
    typer.echo("chat: type a message; /reset starts over, /exit quits.", err=True)
    while True:
        try:
            line = input("you> ")
        except EOFError:
            break
        if line.strip() == "/exit":
            break
        if line.strip() == "/reset":
            session.reset()
            continue
        sys.stdout.write("assistant> ")
        result = GenerationResult(sequences=[], stats=GenerationStats())
        _to_terminal(session.send(line, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed, result=result))
        _report(result.stats)
