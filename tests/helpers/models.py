"""Tiny models of every family, built once per test process, and a scripted stand-in model."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import torch
from torch import nn

from tnlm.models.registry import create_model, preset_names

# every family's tiny preset; a family whose code lands later joins the tests that use these
TINY_PRESETS = [p for p in preset_names() if p.endswith("-tiny")]


@functools.lru_cache(maxsize=None)
def tiny_model(name: str) -> nn.Module:
    return create_model(name, seed=0).eval()


class ScriptedState:
    """The decoding state of ScriptedLM: how many steps it has taken; it holds no tensors."""

    def __init__(self, step: int) -> None:
        self.step = step

    def nbytes(self) -> int:
        return 0


class ScriptedLM(nn.Module):
    """Follows the family contract but always predicts the next token of `script`, whatever the input:
    text-level behaviour (stop strings, streaming, EOS) can then be tested exactly."""

    def __init__(self, script: list[int], vocab_size: int = 512) -> None:
        super().__init__()
        self.script, self.vocab_size = script, vocab_size
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=vocab_size)

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=True, logits_to_keep=0):
        step = 0 if cache is None else cache.step + 1
        B, T = input_ids.shape
        logits = torch.ones(B, T, self.vocab_size)  # every token plausible, the script's far ahead
        logits[:, -1, self.script[min(step, len(self.script) - 1)]] = 10.0
        return SimpleNamespace(logits=logits, cache=ScriptedState(step))
