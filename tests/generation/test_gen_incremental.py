"""Incremental decoding (prefill, then one token at a time) gives the logits of one full forward pass."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import rel_err
from tests.helpers.models import TINY_PRESETS, tiny_model
from tnlm.generation import DecodeState, left_pad

PREFILL, STEPS = 24, 300


def _incremental_logits(model, ids: torch.Tensor, mask: torch.Tensor | None, prefill: int) -> torch.Tensor:
    """(B, T, V) logits from a prefill of `prefill` tokens, then one forward per token with the cache."""
    m = None if mask is None else mask[:, :prefill]
    out = model(input_ids=ids[:, :prefill], attention_mask=m, use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(prefill, ids.shape[1]):
        m = None if mask is None else mask[:, : t + 1]
        out = model(input_ids=ids[:, t : t + 1], attention_mask=m, cache=cache, use_cache=True)
        logits.append(out.logits)
        cache = out.cache
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("name", TINY_PRESETS)
@torch.no_grad()
def test_incremental_equals_full_forward(name: str) -> None:
    model = tiny_model(name)
    # Infini-attention: the run must cross several segment boundaries (memory updates)
    segment = getattr(model.config, "segment_length", None)
    assert segment is None or PREFILL + STEPS > 3 * segment
    ids = torch.randint(8, model.config.vocab_size, (1, PREFILL + STEPS), generator=torch.Generator().manual_seed(1))
    full = model(input_ids=ids, use_cache=False).logits
    inc = _incremental_logits(model, ids, None, PREFILL)
    assert inc.shape == full.shape
    assert rel_err(inc, full) <= 1e-4
    # position by position too: a single bad step must not hide in the average
    per_pos = [rel_err(inc[:, t], full[:, t]) for t in range(full.shape[1])]
    assert max(per_pos) <= 1e-3


@pytest.mark.parametrize("name", TINY_PRESETS)
@torch.no_grad()
def test_left_padded_batch_decodes_like_each_sequence_alone(name: str) -> None:
    model = tiny_model(name)
    g = torch.Generator().manual_seed(2)
    seqs = [torch.randint(8, model.config.vocab_size, (n,), generator=g).tolist() for n in (90, 61)]
    ids, mask = left_pad(seqs, pad_id=0)
    inc = _incremental_logits(model, ids, mask, prefill=70)  # row 1 has 41 real prompt tokens
    for row, seq in enumerate(seqs):
        alone = model(input_ids=torch.tensor([seq]), use_cache=False).logits[0]
        mine = inc[row, ids.shape[1] - len(seq) :]
        assert rel_err(mine, alone) <= 1e-4


@pytest.mark.parametrize("name", TINY_PRESETS)
@torch.no_grad()
def test_chunked_prefill_hands_over_the_same_state(name: str) -> None:
    model = tiny_model(name)
    ids = torch.randint(8, model.config.vocab_size, (2, 150), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :9] = 0
    whole, chunked = DecodeState(model), DecodeState(model)
    a = whole.prefill(ids, mask)
    b = chunked.prefill(ids, mask, chunk_size=37)
    assert rel_err(b, a) <= 1e-4
    nxt = a.argmax(-1)
    assert rel_err(chunked.step(nxt), whole.step(nxt)) <= 1e-4


@torch.no_grad()
def test_transnormer_state_size_does_not_grow() -> None:
    model = tiny_model("tnl-tiny")
    state = DecodeState(model)
    logits = state.prefill(torch.randint(8, 200, (1, 40)), torch.ones(1, 40, dtype=torch.long))
    sizes = []
    for _ in range(50):
        logits = state.step(logits.argmax(-1))
        sizes.append(state.nbytes())
    assert len(set(sizes)) == 1 and sizes[0] > 0


def test_transnormer_prefills_with_the_block_algorithm_then_steps_recurrently(monkeypatch) -> None:
    """One block-algorithm call per layer for the whole prompt, then one RNN step per layer per token."""
    import tnlm.layers.linear_attention as la

    calls = {"block": [], "recurrent": []}

    def spy(kind, fn):
        def wrapped(q, k, v, log_decay, **kw):
            calls[kind].append((q.shape[1], kw.get("initial_state") is not None))
            return fn(q, k, v, log_decay, **kw)

        return wrapped

    monkeypatch.setattr(la, "lightning_attn", spy("block", la.lightning_attn))
    monkeypatch.setattr(la, "recurrent_lightning_attn", spy("recurrent", la.recurrent_lightning_attn))
    model = tiny_model("tnl-tiny")
    layers = model.config.decoder_layers
    state = DecodeState(model)
    logits = state.prefill(torch.randint(8, 200, (1, 50)), torch.ones(1, 50, dtype=torch.long))
    for _ in range(5):
        logits = state.step(logits.argmax(-1))
    assert calls["block"] == [(50, False)] * layers
    assert calls["recurrent"] == [(1, True)] * (5 * layers)
