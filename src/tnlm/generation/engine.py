"""generate() and stream(): one decoding loop for every model family.

>>> import tnlm
>>> from tnlm.generation import ByteTokenizer, generate
>>> model = tnlm.create_model("tnl-tiny", seed=0).eval()
>>> out = generate(model, ByteTokenizer(), ["Hello", "Hi"], max_new_tokens=4)
>>> len(out.sequences), out.sequences[0].finish_reason
(2, 'length')
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.generation.sampling import SamplingParams, next_tokens
from tnlm.generation.fast import FastDecodeState
from tnlm.generation.state import DecodeState
from tnlm.generation.streaming import TextStream
from tnlm.generation.tokenizer import TextTokenizer

Prompt = str | Sequence[int]
MAX_SEED = 2**63  # torch generators take 64-bit seeds; sequence i of a batch draws with seed + i


@dataclass
class GeneratedSequence:
    prompt_tokens: list[int]
    tokens: list[int] = field(default_factory=list)  # generated ids, without the EOS that ended them
    text: str = ""
    finish_reason: str | None = None  # "eos", "stop" (a stop string) or "length"


@dataclass
class GenerationStats:
    prompt_tokens: int = 0  # over the batch, padding excluded; new tokens only when a state is continued
    cached_tokens: int = 0  # tokens a continued state already held (a chat's earlier turns)
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0  # after the first token, compiling excluded
    compile_s: float = 0.0  # compiling decode steps (compile=True; the first step of each batch size)
    state_bytes: int | None = 0  # the decoding state at the end (None: the model's cache does not say)

    @property
    def tokens_per_s(self) -> float:
        return self.generated_tokens / max(self.prefill_s + self.decode_s, 1e-9)

    @property
    def ms_per_token(self) -> float:
        """Decoding time per generated token after the first one (which the prefill produces)."""
        steps = max(self.generated_tokens - 1, 1)
        return 1000.0 * self.decode_s / steps


@dataclass
class GenerationResult:
    sequences: list[GeneratedSequence]
    stats: GenerationStats

    @property
    def texts(self) -> list[str]:
        return [s.text for s in self.sequences]


@dataclass(frozen=True)
class _Request:
    tokenizer: TextTokenizer
    sampling: SamplingParams
    max_new_tokens: int
    stop: tuple[str, ...]
    eos_ids: frozenset[int]
    seed: int | None
    prefill_chunk_size: int | None
    reference: bool
    compile: bool


def check_text(text: str, what: str) -> None:
    """Refuse text that cannot be encoded: lone surrogates, which is how Python hands over bytes that
    were not UTF-8 (command-line arguments, or standard input read with errors="surrogateescape")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(
            f"{what} is not valid UTF-8 text (character {err.start + 1} stands for a byte that is not UTF-8); "
            "check your terminal's or file's encoding"
        ) from None


def _encode(tokenizer: TextTokenizer, prompts: Sequence[Prompt], vocab_size: int | None) -> list[list[int]]:
    if isinstance(prompts, str):
        raise ConfigError("prompts is one string; pass a list of prompts, e.g. [prompt]")
    if len(prompts) == 0:
        raise ConfigError("the list of prompts is empty; give at least one prompt")
    encoded = []
    for i, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            check_text(prompt, f"prompt {i}")
            ids = tokenizer.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
        if not ids:
            raise ConfigError(f"prompt {i} is empty after tokenization; give at least one token of text")
        if vocab_size and not all(0 <= t < vocab_size for t in ids):
            raise ConfigError(f"prompt {i} holds token ids outside the model's vocabulary [0, {vocab_size})")
        encoded.append(ids)
    return encoded


def _check_length(model: nn.Module, longest: int, max_new_tokens: int) -> None:
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and longest + max_new_tokens > limit:
        raise ConfigError(
            f"prompt ({longest} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
            f"max_position_embeddings ({limit}); shorten the prompt or lower max_new_tokens"
        )


def left_pad(token_lists: list[list[int]], *, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) ids and mask, prompts aligned on the right so every sequence's next token is the last column."""
    T = max(len(t) for t in token_lists)
    ids = torch.full((len(token_lists), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), T), dtype=torch.long)
    for i, toks in enumerate(token_lists):
        ids[i, T - len(toks) :] = torch.tensor(toks, dtype=torch.long)
        mask[i, T - len(toks) :] = 1
    return ids, mask


def _generators(seed: int | None, batch: int) -> list[torch.Generator] | None:
    """Sequence i samples with seed + i, so a prompt gives the same text alone or at index 0 of a batch."""
    if seed is None:
        return None
    return [torch.Generator().manual_seed(seed + i) for i in range(batch)]


def _seen_mask(ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, V): which tokens each prompt contains (padding excluded), for the repetition penalty."""
    seen = torch.zeros(ids.shape[0], vocab, dtype=torch.bool)
    for row in range(ids.shape[0]):
        seen[row, ids[row][mask[row].bool()]] = True
    return seen


def _accept(seq: GeneratedSequence, stream: TextStream, token: int, req: _Request) -> str:
    """Record one new token of a running sequence; returns the text it releases."""
    if token in req.eos_ids:
        seq.finish_reason = "eos"
        return stream.finish()
    seq.tokens.append(token)
    piece = stream.push(token)
    if stream.stopped:
        seq.finish_reason = "stop"
    elif len(seq.tokens) >= req.max_new_tokens:
        seq.finish_reason = "length"
        piece += stream.finish()
    return piece


def _accept_all(
    seqs: list[GeneratedSequence], streams: list[TextStream], toks: list[int], req: _Request, stats: GenerationStats
) -> Iterator[tuple[int, str]]:
    """One new token per sequence; finished sequences ignore theirs (their rows still run, harmlessly)."""
    for i, tok in enumerate(toks):
        if seqs[i].finish_reason is None:
            stats.generated_tokens += 1
            piece = _accept(seqs[i], streams[i], tok, req)
            if piece:
                yield i, piece


def _decode_loop(
    model: nn.Module, prompts: Sequence[Prompt], req: _Request, result: GenerationResult,
    state: DecodeState | None = None,
) -> Iterator[tuple[int, str]]:
    """Yields (sequence index, text piece) as text is released; fills `result` as it goes. A given
    `state` that holds tokens is continued: the prompt is fed after them."""
    encoded = _encode(req.tokenizer, prompts, getattr(model.config, "vocab_size", None))
    state = state if state is not None else new_state(model, reference=req.reference, compile=req.compile)
    history = state.tokens[0] if state.tokens else []  # a continued state holds one sequence
    _check_length(model, len(history) + max(len(e) for e in encoded), req.max_new_tokens)
    ids, mask = left_pad(encoded, pad_id=req.tokenizer.pad_token_id)
    seqs = [GeneratedSequence(prompt_tokens=e) for e in encoded]
    result.sequences[:] = seqs
    streams = [TextStream(req.tokenizer, stop=req.stop) for _ in seqs]
    stats, gens = result.stats, _generators(req.seed, len(seqs))
    stats.prompt_tokens, stats.cached_tokens = int(mask.sum()), len(history)
    compiled_before = state.compile_s
    t0 = time.perf_counter()
    logits = state.prefill(ids, mask, chunk_size=req.prefill_chunk_size)
    seen = _seen_mask(ids, mask, logits.shape[-1]).to(logits.device)
    seen[:, history] = True  # the repetition penalty sees the whole conversation
    for step in range(req.max_new_tokens):
        toks = next_tokens(logits, params=req.sampling, seen=seen, generators=gens)
        seen[torch.arange(len(seqs), device=seen.device), toks] = True
        yield from _accept_all(seqs, streams, toks.tolist(), req, stats)
        now = time.perf_counter()
        if step == 0:
            stats.prefill_s, t0 = now - t0, now
        stats.compile_s = state.compile_s - compiled_before
        stats.decode_s = now - t0 - stats.compile_s
        if all(s.finish_reason is not None for s in seqs):
            break
        logits = state.step(toks)
    stats.state_bytes = state.nbytes()
    for seq, stream in zip(seqs, streams):
        seq.text = stream.text


def _check_paths(reference: bool, compile: bool) -> None:
    if reference and compile:
        raise ConfigError("reference and compile exclude each other: the reference is the uncompiled forward pass")


def new_state(model: nn.Module, *, reference: bool = False, compile: bool = False) -> DecodeState:
    """The decoding state generate() uses: the fast step (FastDecodeState; compile=True: its compiled
    form where it applies, see generation/compiled.py), or with reference=True the general forward pass
    they are tested against (DecodeState). All give the same tokens."""
    _check_paths(reference, compile)
    return DecodeState(model) if reference else FastDecodeState(model, compile=compile)


def _request(
    tokenizer: TextTokenizer,
    *,
    max_new_tokens: int,
    sampling: SamplingParams | None,
    stop: Sequence[str],
    eos_token_ids: Sequence[int] | None,
    seed: int | None,
    prefill_chunk_size: int | None,
    reference: bool = False,
    compile: bool = False,
) -> _Request:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, numbers.Integral) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not 0 <= seed < MAX_SEED):
        raise ConfigError(f"seed must be a whole number from 0 to 2**63 - 1, got {seed!r}")
    if prefill_chunk_size is not None and (isinstance(prefill_chunk_size, bool)
                                           or not isinstance(prefill_chunk_size, numbers.Integral)
                                           or prefill_chunk_size < 1):
        raise ConfigError(f"prefill_chunk_size must be a whole number >= 1 (or None: the whole prompt at once), "
                          f"got {prefill_chunk_size!r}")
    _check_paths(reference, compile)
    if isinstance(stop, str) or any(not isinstance(s, str) or not s for s in stop):
        raise ConfigError(f"stop must be a list of non-empty strings, got {stop!r}")
    if eos_token_ids is None:
        eos_token_ids = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    return _Request(
        tokenizer=tokenizer,
        sampling=sampling or SamplingParams(),
        max_new_tokens=max_new_tokens,
        stop=tuple(stop),
        eos_ids=frozenset(int(e) for e in eos_token_ids),
        seed=seed,
        prefill_chunk_size=prefill_chunk_size,
        reference=bool(reference),
        compile=bool(compile),
    )


def generate(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompts: Sequence[Prompt],
    *,
    max_new_tokens: int = 64,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    eos_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    prefill_chunk_size: int | None = None,
    reference: bool = False,
    compile: bool = False,
) -> GenerationResult:
    """Continue each prompt (text or token ids). Prompts of different lengths are left-padded into one
    batch; each sequence gets the tokens it would get alone. eos_token_ids defaults to the tokenizer's.
    reference=True decodes with the general forward pass instead of the fast step (same tokens);
    compile=True with the fast step compiled for the batch size (TransNormer on CPUs, generation/compiled.py)."""
    req = _request(tokenizer, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop,
                   eos_token_ids=eos_token_ids, seed=seed, prefill_chunk_size=prefill_chunk_size,
                   reference=reference, compile=compile)  # fmt: skip
    result = GenerationResult(sequences=[], stats=GenerationStats())
    for _ in _decode_loop(model, prompts, req, result):
        pass
    return result


def stream(
    model: nn.Module,
    tokenizer: TextTokenizer,
    prompt: Prompt,
    *,
    max_new_tokens: int = 64,
    sampling: SamplingParams | None = None,
    stop: Sequence[str] = (),
    eos_token_ids: Sequence[int] | None = None,
    seed: int | None = None,
    prefill_chunk_size: int | None = None,
    result: GenerationResult | None = None,
    state: DecodeState | None = None,
    reference: bool = False,
    compile: bool = False,
) -> Iterator[str]:
    """Text pieces of one prompt's continuation as they are decoded; never half a character, never
    part of a stop string. Pass an empty GenerationResult as `result` to read the tokens and stats after.
    Pass a DecodeState to keep it: it then holds every token fed (see state.tokens), and a later call
    with it continues from there, feeding only its own prompt (how ChatSession carries a conversation).
    reference=True (without a state) decodes with the general forward pass instead of the fast step;
    compile=True (without a state) with the fast step compiled (generation/compiled.py).
    Invalid options raise here, before the first piece is asked for."""
    req = _request(tokenizer, max_new_tokens=max_new_tokens, sampling=sampling, stop=stop,
                   eos_token_ids=eos_token_ids, seed=seed, prefill_chunk_size=prefill_chunk_size,
                   reference=reference, compile=compile)  # fmt: skip
    result = result if result is not None else GenerationResult(sequences=[], stats=GenerationStats())
    return (piece for _, piece in _decode_loop(model, [prompt], req, result, state))
