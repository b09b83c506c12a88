"""Shared pieces of the generation tests: tiny models of every family, a scripted stand-in model."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tnlm.models.registry import create_model, preset_names

# every family's tiny preset; a family whose code lands later joins these tests automatically
TINY_PRESETS = [p for p in preset_names() if p.endswith("-tiny")]


@pytest.fixture(autouse=True)
def one_thread():
    """Decoding runs one tiny forward per token: one thread is ~10x faster than two on a busy
    2-core machine (no OpenMP hand-off per op). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def tiny_model(name: str) -> nn.Module:
    return create_model(name, seed=0).eval()


@pytest.fixture(params=TINY_PRESETS)
def family_model(request) -> nn.Module:
    return tiny_model(request.param)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class ScriptedLM(nn.Module):
    """Follows the family contract but always predicts the next token of `script`, whatever the input:
    text-level behaviour (stop strings, streaming, EOS) can then be tested exactly."""

    def __init__(self, script: list[int], vocab_size: int = 512) -> None:
        super().__init__()
        self.script, self.vocab_size = script, vocab_size
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab_size)

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=True, logits_to_keep=0):
        step = 0 if cache is None else cache + 1
        B, T = input_ids.shape
        logits = torch.ones(B, T, self.vocab_size)  # every token plausible, the script's far ahead
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 10.0
        return SimpleNamespace(logits=logits, cache=step)
