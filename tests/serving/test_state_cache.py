"""The state cache: longest usable prefix, exact-only reuse for recurrent states, cut KV caches,
later turns superseding earlier ones, and a hard memory bound."""

from __future__ import annotations

import functools

import pytest
import torch

from tnlm.generation.batch import SequenceState, feed
from tnlm.models.registry import create_model
from tnlm.serving.state_cache import StateCache


@functools.lru_cache(maxsize=None)
def _model(name: str):
    return create_model(name, seed=0).eval()


def _state(name: str, tokens: list[int]) -> SequenceState:
    state = SequenceState()
    feed(_model(name), state, tokens)
    return state


A = list(range(10, 50))  # 40 tokens
B = A[:30] + list(range(100, 120))  # shares 30 tokens with A


@pytest.mark.parametrize("name", ["tnl-tiny", "transformer-tiny", "infini-tiny"])
def test_the_longest_kept_prefix_is_continued_from_a_copy(name: str) -> None:
    cache = StateCache(2**30)
    cache.put(A[:20], _state(name, A[:20]))
    cache.put(A, _state(name, A))
    hit = cache.lookup(A + [7, 8])
    assert hit.tokens == len(A) and hit.entry is not None
    logits = feed(_model(name), hit.state, [7, 8])
    torch.testing.assert_close(logits, feed(_model(name), SequenceState(), A + [7, 8]), rtol=1e-4, atol=1e-4)
    again = cache.lookup(A + [7, 8])  # the kept state was not changed by the continuation
    assert again.state.length == len(A)
    # an exact match leaves no token to feed: a KV cache is cut one short, otherwise the shorter entry serves
    assert cache.lookup(A).tokens == (len(A) - 1 if name == "transformer-tiny" else 20)
    assert cache.hits == 3 and cache.misses == 0


def test_a_recurrent_state_serves_only_prompts_that_extend_it_but_a_kv_cache_can_be_cut() -> None:
    recurrent, kv = StateCache(2**30), StateCache(2**30, min_shared=16)
    recurrent.put(A, _state("tnl-tiny", A))
    kv.put(A, _state("transformer-tiny", A))
    assert recurrent.lookup(B).entry is None and recurrent.misses == 1
    hit = kv.lookup(B)
    assert hit.tokens == 30 and hit.state.length == 30
    logits = feed(_model("transformer-tiny"), hit.state, B[30:])
    torch.testing.assert_close(logits, feed(_model("transformer-tiny"), SequenceState(), B), rtol=1e-4, atol=1e-4)
    assert kv.lookup(A[:10] + [999]).entry is None  # 10 shared tokens: below min_shared


def test_a_next_turn_supersedes_the_earlier_turns_and_same_keys_do_not_pile_up() -> None:
    cache = StateCache(2**30)
    cache.put(A[:20], _state("tnl-tiny", A[:20]))
    cache.put(A[:30], _state("tnl-tiny", A[:30]))
    cache.put(B, _state("tnl-tiny", B))  # another conversation: not a continuation of A[:20]
    cache.put(A, _state("tnl-tiny", A), supersede=True)
    assert len(cache) == 2 and cache.lookup(A + [1]).tokens == len(A) and cache.lookup(B + [1]).tokens == len(B)
    cache.put(A, _state("tnl-tiny", A))
    assert len(cache) == 2
    assert cache.nbytes == sum(e.nbytes for e in cache._entries.values())


def test_memory_stays_within_the_bound_least_recently_used_first() -> None:
    one = _state("tnl-tiny", A[:5])
    size = one.nbytes() + 8 * 5
    cache = StateCache(3 * size)
    keys = [[t, t + 1, t + 2, t + 3, t + 4] for t in (10, 20, 30, 40)]
    for key in keys[:3]:
        cache.put(key, _state("tnl-tiny", key))
    cache.lookup(keys[0] + [1])  # keys[0] is now the most recently used
    cache.put(keys[3], _state("tnl-tiny", keys[3]))
    assert cache.nbytes <= 3 * size and len(cache) == 3 and cache.evictions == 1
    assert cache.lookup(keys[1] + [1]).entry is None  # the least recently used went
    assert cache.lookup(keys[0] + [1]).entry is not None
    tiny = StateCache(size // 2)
    tiny.put(keys[0], _state("tnl-tiny", keys[0]))  # larger than the whole budget: not kept
    assert len(tiny) == 0 and tiny.nbytes == 0


def test_a_state_must_match_its_key() -> None:
    with pytest.raises(ValueError, match="cannot be kept"):
        StateCache(2**30).put(A, _state("tnl-tiny", A[:5]))
