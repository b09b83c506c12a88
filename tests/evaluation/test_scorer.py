"""The log-likelihood scorer: a hand-built case, and batch size / context reuse / truncation never
change a log-likelihood, on every family."""

from __future__ import annotations

import math
import random

import pytest
import torch

from tests.evaluation.conftest import TINY_PRESETS, BigramLM, bigram_logp, tiny_model
from tnlm.evaluation.cache import select_cache_rows
from tnlm.evaluation.scorer import TokenRequest, _plan, _prepare, score_tokens


@pytest.mark.parametrize("reuse", [False, True], ids=["whole", "reuse"])
def test_hand_built_bigram_scores(reuse: bool) -> None:
    model = BigramLM()
    context = [10, 11, 12]
    right, wrong, mixed = [13, 14, 15], [20, 21, 22], [13, 14, 99]
    reqs = [TokenRequest(context, c, group=0) for c in (right, wrong, mixed)]
    scores = score_tokens(model, reqs, batch_size=2, reuse_context=reuse, min_saving=0.0)
    half, rest = math.log(0.5), math.log(0.5 / 299)
    assert scores[0].logprob == pytest.approx(3 * half, abs=1e-5) and scores[0].is_greedy
    assert scores[1].logprob == pytest.approx(rest + half + half, abs=1e-5) and not scores[1].is_greedy
    assert scores[2].logprob == pytest.approx(half + half + rest, abs=1e-5) and not scores[2].is_greedy
    assert [s.tokens for s in scores] == [3, 3, 3]
    best = max(range(3), key=lambda i: scores[i].logprob)
    assert best == 0


def test_bigram_sums_match_the_definition_on_random_requests() -> None:
    rng = random.Random(1)
    model = BigramLM()
    reqs = []
    for g in range(5):
        ctx = [rng.randrange(300) for _ in range(rng.randrange(1, 12))]
        reqs += [TokenRequest(ctx, [rng.randrange(300) for _ in range(rng.randrange(1, 6))], g) for _ in range(3)]
    scores = score_tokens(model, reqs, batch_size=4)
    for r, s in zip(reqs, scores):
        seq = list(r.context) + list(r.continuation)
        expected = sum(bigram_logp(seq[i - 1], seq[i]) for i in range(len(r.context), len(seq)))
        assert s.logprob == pytest.approx(expected, abs=1e-4)


def _random_requests(seed: int, vocab: int = 260) -> list[TokenRequest]:
    """Groups of choices sharing a context, with choices that share leading tokens, odd lengths, a
    singleton group and ungrouped requests."""
    rng = random.Random(seed)
    reqs = []
    for g in range(6):
        ctx = [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 70))]
        stem = [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 4))]
        for _ in range(rng.randrange(1, 5)):
            cont = stem + [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 7))]
            reqs.append(TokenRequest(ctx, cont, group=g))
    reqs.append(TokenRequest([5, 6, 7], [8], group=None))
    return reqs


@torch.no_grad()
def _reference(model, reqs: list[TokenRequest], max_length: int | None = None) -> list[float]:
    """One plain forward per request, no padding, no cache."""
    out = []
    for r in reqs:
        full = (list(r.context) + list(r.continuation))[-(max_length + 1) :] if max_length else list(r.context) + list(r.continuation)
        logp = torch.log_softmax(model(torch.tensor([full[:-1]])).logits[0].float(), -1)
        n = len(r.continuation)
        out.append(logp[-n:].gather(-1, torch.tensor(full[-n:])[:, None]).sum().item())
    return out


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_batch_size_and_context_reuse_change_nothing(name: str) -> None:
    model = tiny_model(name).model
    reqs = _random_requests(0)
    expected = _reference(model, reqs)
    for reuse in (False, True):
        for batch_size in (1, 5, 64):
            got = [s.logprob for s in score_tokens(model, reqs, batch_size=batch_size, reuse_context=reuse, min_saving=0.0)]
            assert got == pytest.approx(expected, abs=1e-5, rel=1e-6), (reuse, batch_size)


@pytest.mark.parametrize("reuse", [False, True], ids=["whole", "reuse"])
def test_long_inputs_lose_context_on_the_left(reuse: bool) -> None:
    model = tiny_model("transformer-tiny").model
    reqs = _random_requests(3)
    got = [s.logprob for s in score_tokens(model, reqs, batch_size=8, reuse_context=reuse, max_length=16, min_saving=0.0)]
    assert got == pytest.approx(_reference(model, reqs, max_length=16), abs=1e-5, rel=1e-6)


def test_bad_requests_are_refused() -> None:
    model = BigramLM()
    with pytest.raises(ValueError, match="at least one context"):
        score_tokens(model, [TokenRequest([], [1])])
    with pytest.raises(ValueError, match="does not fit"):
        score_tokens(model, [TokenRequest([1], [2] * 9)], max_length=8)
    with pytest.raises(ValueError, match="batch_size"):
        score_tokens(model, [TokenRequest([1], [2])], batch_size=0)


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_copied_cache_rows_continue_like_the_original(name: str) -> None:
    model = tiny_model(name).model
    ids = torch.randint(3, 200, (2, 9))
    with torch.no_grad():
        out = model(ids, use_cache=True)
        copies = select_cache_rows(out.cache, torch.tensor([1, 1, 0]), batch=2)
        nxt = torch.randint(3, 200, (3, 4))
        got = model(nxt, cache=copies, use_cache=True).logits
        full = model(torch.cat([ids[[1, 1, 0]], nxt], dim=1)).logits[:, -4:]
        # the original cache still continues its own rows: the copies share no storage with it
        again = model(nxt[:2], cache=out.cache, use_cache=True).logits
        ref = model(torch.cat([ids, nxt[:2]], dim=1)).logits[:, -4:]
    assert torch.allclose(got, full, atol=1e-4)
    assert torch.allclose(again, ref, atol=1e-4)


def test_cache_without_a_batch_dimension_is_refused() -> None:
    class Odd:
        def __init__(self) -> None:
            self.table = torch.zeros(5, 3)  # not batch-first

    with pytest.raises(TypeError, match="batch dimension"):
        select_cache_rows(Odd(), torch.tensor([0, 0]), batch=2)


def test_a_prefix_is_shared_only_when_it_saves_enough() -> None:
    long_context = [TokenRequest(list(range(3, 53)), [60 + i], group=0) for i in range(4)]
    short_context = [TokenRequest([3, 4], list(range(10 + i, 30 + i)), group=1) for i in range(2)]
    reqs = long_context + short_context
    prepared = [_prepare(r, None) for r in reqs]
    units = _plan(prepared, reqs, True, 1 / 3)
    assert [(u.members, u.shared) for u in units] == [([0, 1, 2, 3], 50), ([4], 0), ([5], 0)]
    assert [(u.members, u.shared) for u in _plan(prepared, reqs, True, 0.0)][1] == ([4, 5], 2)
    assert all(u.shared == 0 for u in _plan(prepared, reqs, False, 0.0))
