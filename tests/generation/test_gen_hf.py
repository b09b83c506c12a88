"""transformers' model.generate() on tnlm models: same tokens as tnlm's engine, clear errors otherwise."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import tiny_model
from tnlm.errors import ConfigError
from tnlm.generation import ByteTokenizer, generate, left_pad
from tnlm.models import DecoderForCausalLM

TOK = ByteTokenizer()
PROMPTS = ["The quick brown fox", "Hi", "Once upon a time"]
NEW = 10


def _hf_greedy(model, prompts: list[str]) -> list[list[int]]:
    ids, mask = left_pad([TOK.encode(p) for p in prompts], pad_id=TOK.pad_token_id)
    out = model.generate(
        ids, attention_mask=mask, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False,
        pad_token_id=TOK.pad_token_id, eos_token_id=None,
    )  # fmt: skip
    return out[:, ids.shape[1] :].tolist()


def test_hf_generate_greedy_equals_engine(family_model) -> None:
    ours = generate(family_model, TOK, PROMPTS, max_new_tokens=NEW, eos_token_ids=[])
    assert _hf_greedy(family_model, PROMPTS) == [s.tokens for s in ours.sequences]
    assert _hf_greedy(family_model, PROMPTS[:1]) == [ours.sequences[0].tokens]


def test_hf_generate_twice_gives_the_same_tokens(family_model) -> None:
    assert _hf_greedy(family_model, PROMPTS[:1]) == _hf_greedy(family_model, PROMPTS[:1])


def test_hf_sampling_runs_and_is_seeded(family_model) -> None:
    ids = torch.tensor([TOK.encode(PROMPTS[0])])
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(family_model.generate(ids, max_new_tokens=8, do_sample=True, top_k=20, pad_token_id=0).tolist())
    assert runs[0] == runs[1]


@pytest.mark.parametrize("kwargs", [{"num_beams": 2}, {"num_beams": 2, "do_sample": True}])
def test_strategies_that_need_to_fork_the_state_raise_clearly(kwargs: dict) -> None:
    model = tiny_model("tnl-tiny")
    assert isinstance(model, DecoderForCausalLM)
    with pytest.raises(ConfigError, match="num_beams=1"):
        model.generate(torch.tensor([TOK.encode("hi")]), max_new_tokens=3, pad_token_id=0, **kwargs)


def test_hf_generate_without_a_cache_gives_the_same_tokens(family_model) -> None:
    ids = torch.tensor([TOK.encode(PROMPTS[2])])
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    cached = family_model.generate(ids, **kwargs)
    uncached = family_model.generate(ids, use_cache=False, **kwargs)
    assert cached.tolist() == uncached.tolist()
