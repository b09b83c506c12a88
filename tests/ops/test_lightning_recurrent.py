"""RNN-mode decoding (recurrent.py): matches the reference, continues a prefill, stays finite at 32K."""

from __future__ import annotations

import math

import pytest
import torch

from tests.helpers import rel_err
from tnlm.ops.lightning import lightning_attn, naive_lightning_attn, recurrent_lightning_attn

TOL = 1e-5
FASTEST = -0.5 * 1.00001  # layer 0, head 0 of an 8-head TransNormerLLM: slope 1/2
SLOWEST = -(2.0**-8) * 1e-5  # last layer, last head: almost no decay


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", [(2, 1, 3, 16, 16), (1, 50, 2, 32, 24), (2, 37, 2, 8, 40)],
                         ids=lambda s: "B{}-T{}-H{}-Dk{}-Dv{}".format(*s))
def test_recurrent_matches_naive_with_gradients(shape):
    B, T, H, Dk, Dv = shape
    leaves = [randn(B, T, H, Dk, seed=1), randn(B, T, H, Dk, seed=2), randn(B, T, H, Dv, seed=3),
              randn(B, H, Dk, Dv, seed=4)]
    leaves = [x.requires_grad_() for x in leaves]
    log_decay = -torch.logspace(0, -3, H)
    results = []
    for fn in (recurrent_lightning_attn, naive_lightning_attn):
        q, k, v, s0 = leaves
        o, final = fn(q, k, v, log_decay, initial_state=s0, output_final_state=True)
        loss = (o * randn(*o.shape, seed=5)).sum() + (final * randn(*final.shape, seed=6)).sum()
        results.append([o, final, *torch.autograd.grad(loss, leaves)])
    for name, a, b in zip(["o", "final", "dq", "dk", "dv", "ds0"], *results):
        assert rel_err(a, b) <= TOL, name


def test_initial_state_is_not_modified():
    s0 = randn(1, 2, 4, 4, seed=0)
    before = s0.clone()
    recurrent_lightning_attn(randn(1, 3, 2, 4, seed=1), randn(1, 3, 2, 4, seed=2), randn(1, 3, 2, 4, seed=3),
                             torch.tensor([-0.5, -0.1]), initial_state=s0, output_final_state=True)
    assert torch.equal(s0, before)


def test_decoding_token_by_token_continues_a_chunk_prefill():
    """Prefill with the block algorithm, then decode one token per call: equals one long call."""
    B, T0, T1, H, D = 2, 333, 60, 4, 32
    q, k, v = (randn(B, T0 + T1, H, D, seed=s) for s in (1, 2, 3))
    log_decay = torch.tensor([FASTEST, -0.1, -0.01, SLOWEST])
    want, want_state = lightning_attn(q, k, v, log_decay, output_final_state=True)
    o, state = lightning_attn(q[:, :T0], k[:, :T0], v[:, :T0], log_decay, output_final_state=True)
    outs = [o]
    for t in range(T0, T0 + T1):
        o_t, state = recurrent_lightning_attn(q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], log_decay,
                                              initial_state=state, output_final_state=True)
        outs.append(o_t)
    assert rel_err(torch.cat(outs, 1), want) <= TOL
    assert rel_err(state, want_state) <= TOL


def test_32768_token_decode_stays_finite_and_matches_chunk():
    """The robust recurrence over 32768 positions with the fastest and the slowest decays.

    Every token goes through `recurrent_lightning_attn`; to keep the test fast the 32768 positions are
    decoded as 64 pieces of 512 tokens in parallel (the batch dimension): pass 1 finds each piece's own
    state, the pieces' states are chained with the same recurrence (S = lambda^512 S + U), and pass 2
    decodes every piece from its true entering state. Only factors <= 1 ever touch a state."""
    T, P, H, D = 32768, 512, 2, 16
    n = T // P
    q, k, v = (randn(1, T, H, D, seed=s) for s in (1, 2, 3))
    log_decay = torch.tensor([FASTEST, SLOWEST])
    pieces = [x.view(n, P, H, D) for x in (q, k, v)]
    _, local = recurrent_lightning_attn(*pieces, log_decay, output_final_state=True)  # (n, H, D, D)
    entering = [torch.zeros(H, D, D)]
    piece_decay = torch.exp(log_decay * P).view(H, 1, 1)  # one factor per piece: no compounding
    for i in range(n - 1):
        entering.append(piece_decay * entering[-1] + local[i])
    o, _ = recurrent_lightning_attn(*pieces, log_decay, initial_state=torch.stack(entering))
    o = o.reshape(1, T, H, D)
    assert torch.isfinite(o).all()
    want, _ = lightning_attn(q, k, v, log_decay)
    assert rel_err(o[:, :, 0], want[:, :, 0]) <= TOL
    # The almost-undecayed head sums 32768 rank-1 updates one rounding at a time: the float32 floor
    # is ~sqrt(T) * eps (= 1.1e-5 measured against a float64 reference; the block algorithm: 4e-7).
    slow_tol = 4 * math.sqrt(T) * torch.finfo(torch.float32).eps
    assert rel_err(o[:, :, 1], want[:, :, 1]) <= slow_tol
    assert rel_err(o[:, -P:], want[:, -P:]) <= slow_tol  # the end of the sequence, where overflow would show


def naive_rnn(q, k, v, log_decay):
    """The form that must not be used: kv_t = kv_(t-1) + lambda^-t k_t^T v_t, o_t = lambda^t q_t kv_t."""
    B, T, H, D = q.shape
    kv = torch.zeros(B, H, D, v.shape[-1])
    lam = torch.exp(log_decay).view(1, H, 1)
    outs = []
    for t in range(T):
        kv = kv + (lam.unsqueeze(-1) ** -t) * k[:, t].unsqueeze(-1) * v[:, t].unsqueeze(-2)
        outs.append((lam**t) * (q[:, t].unsqueeze(-2) @ kv).squeeze(-2))
    return torch.stack(outs, 1)


def test_naive_recurrence_overflows_where_robust_one_does_not():
    """lambda^-t exceeds float32 after ~88.7/slope tokens (178 for slope 1/2): the naive RNN turns into
    inf/NaN there, although it is the same function (it agrees early on); the robust form never does."""
    T, H, D = 300, 1, 8
    q, k, v = (randn(1, T, H, D, seed=s) for s in (1, 2, 3))
    log_decay = torch.tensor([FASTEST])
    naive = naive_rnn(q, k, v, log_decay)
    robust, _ = recurrent_lightning_attn(q, k, v, log_decay)
    want, _ = naive_lightning_attn(q, k, v, log_decay)
    overflow_at = math.ceil(math.log(torch.finfo(torch.float32).max) / 0.5)
    assert rel_err(naive[:, :60], want[:, :60]) <= 1e-4  # same function while lambda^-t is moderate
    assert not torch.isfinite(naive[:, overflow_at:]).any()
    assert torch.isfinite(robust).all() and rel_err(robust, want) <= TOL
