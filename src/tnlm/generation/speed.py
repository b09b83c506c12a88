"""Decoding speed at a given context length: prefill `context` tokens, then time one-token steps.

    timing = time_decoding(model, context=4096, new_tokens=16, rounds=3)
    timing.ms_per_token, timing.state_bytes

The steps are greedy and go through `DecodeState`, as `generate()` runs them. `ms_per_token` is the
best round's mean (timeit's rule: on a shared machine the slower rounds are other processes
interfering); the median, mean and fastest single step are kept too. `benchmarks/decode.py` and
`tnlm compare` both measure with these functions.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.generation.state import DecodeState

FIRST_ID = 8  # random context ids start above the special tokens


@dataclass
class DecodeTiming:
    context: int
    prefill_s: float
    round_means: list[float] = field(default_factory=list)  # seconds per step, one mean per round
    steps: list[float] = field(default_factory=list)  # seconds of every timed step
    state_bytes: int | None = None  # the decoding state after the last step (None: the cache does not say)

    @property
    def ms_per_token(self) -> float:
        return 1000 * min(self.round_means)

    @property
    def ms_per_token_median(self) -> float:
        return 1000 * statistics.median(self.steps)

    @property
    def ms_per_token_mean(self) -> float:
        return 1000 * statistics.fmean(self.steps)

    @property
    def ms_per_token_min(self) -> float:
        return 1000 * min(self.steps)

    def to_dict(self) -> dict:
        return {"context": self.context, "prefill_s": self.prefill_s, "ms_per_token": self.ms_per_token,
                "ms_per_token_median": self.ms_per_token_median, "ms_per_token_mean": self.ms_per_token_mean,
                "ms_per_token_min": self.ms_per_token_min, "state_bytes": self.state_bytes}  # fmt: skip


def random_context(model: nn.Module, context: int, *, seed: int | None = None) -> torch.Tensor:
    """(1, context) random token ids within the model's vocabulary (seeded by the length by default)."""
    generator = torch.Generator().manual_seed(context if seed is None else seed)
    return torch.randint(FIRST_ID, int(model.config.vocab_size), (1, context), generator=generator)


def prefill(model: nn.Module, ids: torch.Tensor, *, chunk_size: int | None = None,
            reference: bool = False) -> tuple[DecodeState, torch.Tensor, float]:  # fmt: skip
    """(state holding `ids`, last logits (1, V), seconds the prefill took). The state is the one generate()
    decodes with (the fast one-token step; reference=True: the general forward it is tested against)."""
    from tnlm.generation.engine import new_state

    state = new_state(model, reference=reference)
    start = time.perf_counter()
    logits = state.prefill(ids, torch.ones_like(ids), chunk_size=chunk_size)
    return state, logits, time.perf_counter() - start


def timed_steps(state: DecodeState, logits: torch.Tensor, n: int, *,
                on_step: Callable[[], None] | None = None) -> tuple[list[float], torch.Tensor]:  # fmt: skip
    """n greedy decode steps: (seconds of each step, the last logits). `on_step` runs after each step,
    outside the timed part (e.g. to sample memory)."""
    seconds = []
    for _ in range(n):
        token = logits.argmax(-1)
        start = time.perf_counter()
        logits = state.step(token)
        seconds.append(time.perf_counter() - start)
        if on_step is not None:
            on_step()
    return seconds, logits


def time_decoding(
    model: nn.Module,
    *,
    context: int,
    new_tokens: int = 16,
    rounds: int = 3,
    pause_s: float = 0.0,
    chunk_size: int | None = 256,
) -> DecodeTiming:
    """Prefill `context` random tokens (in chunks), then `rounds` rounds of `new_tokens` timed steps,
    `pause_s` apart, so that one burst of other work cannot decide the result on its own."""
    if context < 1 or new_tokens < 1 or rounds < 1:
        raise ConfigError(f"decode timing needs context, new_tokens and rounds >= 1, got {context}, {new_tokens}, {rounds}")
    state, logits, prefill_s = prefill(model, random_context(model, context), chunk_size=chunk_size)
    timing = DecodeTiming(context=context, prefill_s=prefill_s)
    for r in range(rounds):
        if r and pause_s:
            time.sleep(pause_s)
        seconds, logits = timed_steps(state, logits, new_tokens)
        timing.steps += seconds
        timing.round_means.append(statistics.fmean(seconds))
    timing.state_bytes = state.nbytes()
    return timing
