"""Logit filters and token choice."""

from __future__ import annotations

import pytest
import torch

from tnlm.errors import ConfigError
from tnlm.generation.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    next_tokens,
    top_k_filter,
    top_p_filter,
)


def test_top_k_keeps_the_k_largest() -> None:
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(top_k_filter(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]
    assert torch.equal(top_k_filter(logits, 0), logits)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    assert torch.isfinite(top_p_filter(logits, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_p_filter(logits, 0.1)).tolist() == [[True, False, False, False]]
    shuffled = logits[:, [2, 0, 3, 1]]  # order in the vocabulary must not matter
    assert torch.isfinite(top_p_filter(shuffled, 0.8)).tolist() == [[False, True, False, True]]


def test_repetition_penalty_pushes_seen_tokens_down() -> None:
    logits = torch.tensor([[2.0, -2.0, 2.0, -2.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 2.0, -2.0]]


def test_greedy_is_argmax_and_sampling_respects_filters() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    seen = torch.zeros_like(logits, dtype=torch.bool)
    assert next_tokens(logits, params=SamplingParams(), seen=seen, generators=None).tolist() == [1]
    params = SamplingParams(temperature=5.0, top_k=2)
    gens = [torch.Generator().manual_seed(0)]
    draws = {next_tokens(logits, params=params, seen=seen, generators=gens).item() for _ in range(200)}
    assert draws == {1, 3}


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "kwargs",
    [{"temperature": -1.0}, {"top_k": -1}, {"top_p": 0.0}, {"top_p": 1.5}, {"repetition_penalty": 0.0},
     {"temperature": NAN}, {"temperature": INF}, {"top_p": NAN}, {"repetition_penalty": NAN},
     {"repetition_penalty": INF}, {"top_k": 2.5}, {"top_k": True}, {"temperature": "0.7"}],
)  # fmt: skip
def test_invalid_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SamplingParams(**kwargs)


def test_a_tiny_temperature_samples_the_argmax_instead_of_nan() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9], [5.0, -1.0, 4.0, 0.0]])
    seen = torch.zeros_like(logits, dtype=torch.bool)
    params = SamplingParams(temperature=1e-30, top_p=0.9)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    assert next_tokens(logits, params=params, seen=seen, generators=gens).tolist() == [1, 0]
