"""Continuous batching (generation/batch.py): rows join and leave between steps and every row decodes
exactly as it would alone; a row's state can leave the batch, be kept, copied, cut and continued."""

from __future__ import annotations

import pytest
import torch

from tnlm.generation import ByteTokenizer, generate
from tnlm.generation.batch import DecodeBatch, SequenceState, feed

TOK = ByteTokenizer()
PROMPTS = ["The quick brown fox", "Hi", "Once upon a time, in a land far away", "0123456789" * 9, "é"]


def _run_schedule(model, prompts: list[str], *, joins: list[int], budgets: list[int]) -> list[list[int]]:
    """Greedy decoding of prompt i, which is prefilled and joins the batch at step joins[i] and leaves
    after budgets[i] tokens; the batch keeps stepping whoever is in it."""
    batch, out, nxt = DecodeBatch(model), [[] for _ in prompts], {}
    step = 0
    while step <= max(joins) or len(batch):
        for i in [i for i, j in enumerate(joins) if j == step]:
            state = SequenceState()
            tok = int(feed(model, state, TOK.encode(prompts[i])).argmax())
            out[i].append(tok)
            if budgets[i] > 1:
                batch.join(i, state)
                nxt[i] = tok
        if len(batch):
            logits = batch.step(torch.tensor([nxt[k] for k in batch.keys]))
            for k, tok in zip(list(batch.keys), logits.argmax(-1).tolist()):
                out[k].append(tok)
                nxt[k] = tok
                if len(out[k]) == budgets[k]:
                    batch.leave(k)
        step += 1
    return out


def test_rows_joining_and_leaving_decode_as_each_alone(family_model) -> None:
    joins, budgets = [0, 0, 3, 9, 14], [12, 5, 16, 6, 9]
    batched = _run_schedule(family_model, PROMPTS, joins=joins, budgets=budgets)
    for prompt, budget, tokens in zip(PROMPTS, budgets, batched):
        alone = generate(family_model, TOK, [prompt], max_new_tokens=budget, eos_token_ids=[])
        assert tokens == alone.sequences[0].tokens, prompt


def _fresh_logits(model, tokens: list[int]) -> torch.Tensor:
    return feed(model, SequenceState(), tokens)


def test_a_state_that_leaves_continues_like_a_fresh_prefill(family_model) -> None:
    """The kept state of a row that ran beside longer and shorter rows is that row's own state."""
    batch, states = DecodeBatch(family_model), [SequenceState() for _ in PROMPTS[:3]]
    seqs = [TOK.encode(p) for p in PROMPTS[:3]]
    for i, (state, ids) in enumerate(zip(states, seqs)):
        feed(family_model, state, ids)
        batch.join(i, state)
    for t in range(5):
        batch.step(torch.tensor([40 + t] * 3))
    for seq in seqs:
        seq += [40 + t for t in range(5)]
    kept = batch.leave(1, keep_state=True)
    assert kept.length == len(seqs[1]) and batch.keys == [0, 2]
    more = TOK.encode(" and more text")
    continued = feed(family_model, kept, more)
    torch.testing.assert_close(continued, _fresh_logits(family_model, seqs[1] + more), rtol=1e-4, atol=1e-4)
    # the remaining rows are unaffected by the departure
    logits = batch.step(torch.tensor([50, 50]))
    torch.testing.assert_close(logits[1], _fresh_logits(family_model, seqs[2] + [50]), rtol=1e-4, atol=1e-4)


def test_clone_is_independent_and_chunked_feed_matches(family_model) -> None:
    ids = TOK.encode(PROMPTS[3])
    whole, chunked = SequenceState(), SequenceState()
    feed(family_model, whole, ids)
    torch.testing.assert_close(feed(family_model, chunked, ids, chunk_size=17), _fresh_logits(family_model, ids))
    copy = whole.clone()
    feed(family_model, whole, TOK.encode(" something else entirely"))
    torch.testing.assert_close(feed(family_model, copy, [60]), _fresh_logits(family_model, ids + [60]))
    assert copy.nbytes() > 0


def test_kv_states_truncate_and_recurrent_states_refuse() -> None:
    import tnlm

    ids = TOK.encode(PROMPTS[0] + PROMPTS[2])
    kv_model = tnlm.create_model("transformer-tiny", seed=0).eval()
    state = SequenceState()
    feed(kv_model, state, ids)
    assert state.truncatable
    cut = state.truncated(10)
    torch.testing.assert_close(feed(kv_model, cut, ids[10:]), _fresh_logits(kv_model, ids))
    assert state.length == len(ids)  # the original is untouched
    tnl = tnlm.create_model("tnl-tiny", seed=0).eval()
    rstate = SequenceState()
    feed(tnl, rstate, ids)
    assert not rstate.truncatable
    with pytest.raises(ValueError, match="rewound"):
        rstate.truncated(10)


def test_misuse_is_refused() -> None:
    import tnlm

    model = tnlm.create_model("tnl-tiny", seed=0).eval()
    batch, state = DecodeBatch(model), SequenceState()
    with pytest.raises(ValueError, match="prefill"):
        batch.join("a", state)
    feed(model, state, [10])
    batch.join("a", state)
    with pytest.raises(ValueError, match="already"):
        batch.join("a", SequenceState())
    with pytest.raises(ValueError, match="tokens for a batch"):
        batch.step(torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="at least one token"):
        feed(model, SequenceState(), [])


@pytest.mark.parametrize("layout", ["rows", "columns", "packed"])  # the linear layers' weight layouts (layouts.LAYOUT)
def test_fast_batch_step_matches_the_reference_as_rows_join_and_leave(family_model, layout, monkeypatch) -> None:
    """The fast step (default) and the model's forward (reference=True) run the same schedule side by
    side: rows of equal length start together (no padding), others join mid-run with other lengths
    (left-padded KV columns) and leave; the reference's tokens feed both, so logits compare step by step."""
    from tnlm.generation import layouts

    monkeypatch.setattr(layouts, "LAYOUT", layout)
    prompts = ["Same len", "Eight ch", "Once upon a time, in a land far away", "0123456789" * 9, "é"]
    joins, budgets = [0, 0, 2, 6, 9], [10, 4, 12, 7, 6]
    fast_batch, ref_batch = DecodeBatch(family_model), DecodeBatch(family_model, reference=True)
    assert fast_batch._fast is not None and ref_batch._fast is None
    count, nxt, step = {}, {}, 0
    while step <= max(joins) or len(ref_batch):
        for i in [i for i, j in enumerate(joins) if j == step]:
            state = SequenceState()
            nxt[i], count[i] = int(feed(family_model, state, TOK.encode(prompts[i])).argmax()), 1
            ref_batch.join(i, state.clone())
            fast_batch.join(i, state)
        if len(ref_batch):
            tokens = torch.tensor([nxt[k] for k in ref_batch.keys])
            ref, got = ref_batch.step(tokens), fast_batch.step(tokens)
            assert fast_batch.keys == ref_batch.keys
            assert (got - ref).abs().max().item() <= 1e-5, f"step {step}"
            assert torch.equal(got.argmax(-1), ref.argmax(-1)), f"step {step}"
            for k, tok in zip(list(ref_batch.keys), ref.argmax(-1).tolist()):
                nxt[k], count[k] = tok, count[k] + 1
                if count[k] == budgets[k]:
                    kept_ref, kept_fast = ref_batch.leave(k, keep_state=True), fast_batch.leave(k, keep_state=True)
                    assert kept_ref.length == kept_fast.length
                    assert (feed(family_model, kept_fast, [7]) - feed(family_model, kept_ref, [7])).abs().max() <= 1e-5
        step += 1
    assert all(count[i] == budgets[i] for i in range(len(prompts)))


def test_sample_rows_gives_each_row_what_the_reference_sampler_gives_it_alone() -> None:
    """Rows of several parameter groups in one call (greedy, greedy with a penalty, seeded draws with
    and without top-p) against next_tokens on each row alone with a generator of the same seed."""
    from tnlm.generation.batch import RowSampler, sample_rows
    from tnlm.generation.sampling import SamplingParams, next_tokens

    vocab, gen = 37, torch.Generator().manual_seed(0)
    kinds = [SamplingParams(), SamplingParams(repetition_penalty=1.5), SamplingParams(temperature=0.8, top_p=0.9),
             SamplingParams(temperature=1.3)]  # fmt: skip
    params = [kinds[i % len(kinds)] for i in range(7)]
    prompts = [[(3 * i + j) % vocab for j in range(5)] for i in range(7)]
    batch = [RowSampler.create(p, seed=10 + i, vocab_size=vocab, prompt=q) for i, (p, q) in enumerate(zip(params, prompts))]
    alone = [RowSampler.create(p, seed=10 + i, vocab_size=vocab, prompt=q) for i, (p, q) in enumerate(zip(params, prompts))]
    for _ in range(4):
        logits = torch.randn(7, vocab, generator=gen) * 3
        got = sample_rows(logits, batch)
        for i, s in enumerate(alone):
            seen = s.seen[None] if s.seen is not None else torch.zeros(1, vocab, dtype=torch.bool)
            want = int(next_tokens(logits[i : i + 1], params=s.params, seen=seen, generators=[s.generator])[0])
            if s.seen is not None:
                s.seen[want] = True
            assert got[i] == want, (i, s.params)
    assert all(b.seen is None or torch.equal(b.seen, a.seen) for b, a in zip(batch, alone))
