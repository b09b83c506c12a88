"""`tnlm generate` (stream a continuation) and `tnlm chat` (interactive multi-turn chat).

Ctrl-C: in `generate` it stops the text and exits 130; in `chat` it stops the reply and returns to
the prompt (that turn is dropped from the conversation), and Ctrl-C at the prompt ends the chat.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tnlm.cli.options import DEVICE, DTYPE, MODEL_ARG, TOKENIZER, load_model

if TYPE_CHECKING:
    from tnlm.generation import ChatSession, GenerationStats, SamplingParams

MAX_NEW = typer.Option(128, "--max-new-tokens", "-n", min=1, help="Stop after this many new tokens.")
TEMPERATURE = typer.Option(0.0, help="0 = greedy; higher = more random.")
TOP_K = typer.Option(0, help="Sample only among the k most likely tokens (0 = off).")
TOP_P = typer.Option(1.0, help="Sample only from the smallest set of tokens with this much probability (1 = off).")
REP_PENALTY = typer.Option(1.0, "--repetition-penalty", help="> 1 discourages repeating tokens (1 = off).")
SEED = typer.Option(None, min=0, max=2**63 - 1, help="Seed for reproducible sampling.")
REFERENCE = typer.Option(False, "--reference", help="Decode with the general forward pass instead of the fast step (same tokens, slower).")
COMPILE = typer.Option(False, "--compile", help="Compile the decode step first (TransNormer on CPUs, float32: 20-30 s once, "
                       "then ~1.7x faster per token; kept on disk for the next run: TNLM_COMPILE_CACHE).")  # fmt: skip


def _check_paths(reference: bool, compile: bool) -> None:
    if reference and compile:
        from tnlm.errors import ConfigError

        raise ConfigError("--reference and --compile exclude each other: the reference is the uncompiled forward pass")


def _compile_notice(compile: bool, model) -> bool:
    """Whether to compile: with --compile, says what happens (or why it cannot) before decoding starts."""
    if not compile:
        return False
    from tnlm.generation.compiled import model_unsupported

    reason = model_unsupported(model)
    if reason is not None:
        typer.echo(f"[--compile: {reason}; decoding with the eager fast step]", err=True)
        return False
    from tnlm.generation.compiled import cache_dir

    folder = cache_dir()
    kept = f", or loads it in about a second where an earlier run kept it in {folder}" if folder is not None else ""
    typer.echo(f"[--compile: the first decode step compiles the model, 20-30 s{kept}]", err=True)
    return True


def _sampling(temperature: float, top_k: int, top_p: float, repetition_penalty: float) -> SamplingParams:
    from tnlm.generation import SamplingParams

    return SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty)


def _report(stats: GenerationStats) -> None:
    cached = f" (+{stats.cached_tokens} kept from earlier turns)" if stats.cached_tokens else ""
    state = "" if stats.state_bytes is None else f", state {stats.state_bytes / 2**20:.2f} MiB"
    compiled = f", plus {stats.compile_s:.1f} s compiling" if stats.compile_s else ""
    typer.echo(
        f"[{stats.prompt_tokens} prompt tokens{cached}, {stats.generated_tokens} generated in "
        f"{stats.prefill_s + stats.decode_s:.2f} s{compiled}: {stats.tokens_per_s:.1f} tokens/s, "
        f"{stats.ms_per_token:.1f} ms/token after the first{state}]",
        err=True,
    )


def _to_terminal(pieces: Iterator[str]) -> None:
    """Write the pieces as they come; the line is ended even when Ctrl-C cuts it short."""
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    finally:
        sys.stdout.write("\n")
        sys.stdout.flush()


def _prompt_text(positional: str | None, option: str | None) -> str:
    from tnlm.errors import ConfigError
    from tnlm.generation.engine import check_text

    if positional is not None and option is not None:
        raise ConfigError("give the prompt once: as PROMPT or as --prompt, not both")
    text = positional if positional is not None else option
    if text is None:
        raise ConfigError('give a prompt: tnlm generate MODEL "Once upon a time" (or --prompt TEXT, or - to read stdin)')
    if text == "-":
        text = sys.stdin.read().removesuffix("\n")
    if not text:
        raise ConfigError("the prompt is empty; give some text to continue")
    check_text(text, "the prompt")
    return text


def generate(
    model: str = MODEL_ARG,
    prompt_arg: str | None = typer.Argument(None, metavar="PROMPT", help="Text to continue; - reads standard input."),
    prompt: str | None = typer.Option(None, "--prompt", "-p", help="Text to continue (instead of PROMPT)."),
    max_new_tokens: int = MAX_NEW,
    temperature: float = TEMPERATURE,
    top_k: int = TOP_K,
    top_p: float = TOP_P,
    repetition_penalty: float = REP_PENALTY,
    stop: list[str] = typer.Option([], "--stop", help="Stop before this text (repeatable)."),
    seed: int | None = SEED,
    tokenizer: Path | None = TOKENIZER,
    dtype: str = DTYPE,
    device: str = DEVICE,
    reference: bool = REFERENCE,
    compile: bool = COMPILE,
) -> None:
    """Continue a prompt, streaming the text; report tokens/s on stderr."""
    from tnlm.generation import GenerationResult, GenerationStats, stream

    text = _prompt_text(prompt_arg, prompt)
    sampling = _sampling(temperature, top_k, top_p, repetition_penalty)
    _check_paths(reference, compile)
    m, tok = load_model(model, tokenizer=tokenizer, dtype=dtype, device=device)
    result = GenerationResult(sequences=[], stats=GenerationStats())
    compile = _compile_notice(compile, m)
    pieces = stream(m, tok, text, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop, seed=seed, result=result,
                    reference=reference, compile=compile)  # fmt: skip
    _to_terminal(pieces)
    _report(result.stats)


def _read_line() -> str | None:
    """The user's next message; None ends the chat (Ctrl-D, Ctrl-C or /exit at the prompt)."""
    try:
        line = input("you> ")
    except (EOFError, KeyboardInterrupt):
        typer.echo("", err=True)
        return None
    return None if line.strip() == "/exit" else line


def _turn(session: ChatSession, line: str, *, max_new_tokens: int, sampling: SamplingParams, seed: int | None) -> None:
    """One exchange. Ctrl-C stops the reply and drops the turn; an error in the message is reported
    and the chat goes on."""
    from tnlm.errors import TnlmError
    from tnlm.generation import GenerationResult, GenerationStats
    from tnlm.generation.engine import check_text

    result = GenerationResult(sequences=[], stats=GenerationStats())
    try:
        check_text(line, "that message")
        pieces = session.send(line, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed, result=result)
        sys.stdout.write("assistant> ")
        try:
            _to_terminal(pieces)
        finally:
            pieces.close()  # an interrupted reply leaves the conversation as it was before this turn
    except KeyboardInterrupt:
        typer.echo("[reply stopped; this turn is dropped. Ctrl-C at the prompt ends the chat]", err=True)
        return
    except TnlmError as err:
        typer.secho(f"error: {err}", err=True, fg=typer.colors.RED)
        return
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
    tokenizer: Path | None = TOKENIZER,
    dtype: str = DTYPE,
    device: str = DEVICE,
    reference: bool = REFERENCE,
    compile: bool = COMPILE,
) -> None:
    """Interactive chat with tnlm's chat template: /reset starts over, /exit or Ctrl-D quits, Ctrl-C
    stops a reply. The decoding state carries over between turns: each turn feeds only the new message."""
    from tnlm.generation import ChatSession
    from tnlm.generation.engine import check_text

    sampling = _sampling(temperature, top_k, top_p, repetition_penalty)
    _check_paths(reference, compile)
    if system is not None:
        check_text(system, "the system message")
    m, tok = load_model(model, tokenizer=tokenizer, dtype=dtype, device=device)
    session = ChatSession(m, tok, system=system, reference=reference, compile=_compile_notice(compile, m))
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # a line that is not UTF-8 gets an error, not a crash
    typer.echo("chat: type a message; /reset starts over, /exit (or Ctrl-D) quits, Ctrl-C stops a reply.", err=True)
    while (line := _read_line()) is not None:
        if not line.strip():
            continue
        if line.strip() == "/reset":
            session.reset()
            kept = " (the system message is kept)" if system else ""
            typer.echo(f"[conversation cleared{kept}]", err=True)
            continue
        _turn(session, line, max_new_tokens=max_new_tokens, sampling=sampling, seed=seed)
