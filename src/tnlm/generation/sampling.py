"""Choosing the next token: repetition penalty, temperature, top-k, top-p, then argmax or a draw.

All functions take logits (B, V) in float32 and return new tensors; nothing here knows the model.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from tnlm.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """temperature 0 means greedy decoding; top_k 0 and top_p 1 switch those filters off;
    repetition_penalty > 1 discourages tokens already in the prompt or the output (CTRL's rule)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "repetition_penalty"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
            raise ConfigError(f"top_k must be a whole number (0 = off), got {self.top_k!r}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.top_k < 0:
            raise ConfigError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1] (1 = off), got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor | None, penalty: float) -> torch.Tensor:
    """seen (B, V) bool: tokens already present (None: only with penalty 1, which changes nothing).
    Positive logits are divided, negative multiplied."""
    if penalty == 1.0:
        return logits
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalised, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits per row (ties at the k-th value are kept), -inf elsewhere."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(-1) - probs  # probability of the tokens ranked above
    drop_sorted = mass_before >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_tokens(
    logits: torch.Tensor,
    *,
    params: SamplingParams,
    seen: torch.Tensor | None,
    generators: list[torch.Generator] | None,
) -> torch.Tensor:
    """(B, V) logits -> (B,) token ids. Row i draws from generators[i], so a sequence's samples do not
    depend on the other sequences in its batch."""
    logits = apply_repetition_penalty(logits.float(), seen, params.repetition_penalty)
    if params.greedy:
        return logits.argmax(-1)
    logits = logits - logits.amax(-1, keepdim=True)  # largest 0: a tiny temperature cannot overflow to inf
    logits = top_p_filter(top_k_filter(logits / params.temperature, params.top_k), params.top_p)
    probs = torch.softmax(logits, dim=-1)
    if generators is None:
        return torch.multinomial(probs, 1).squeeze(-1)
    rows = [torch.multinomial(probs[i], 1, generator=g) for i, g in enumerate(generators)]
    return torch.cat(rows)
