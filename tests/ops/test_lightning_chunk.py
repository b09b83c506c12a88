"""The block algorithm (chunk.py), reached through the public `lightning_attn` with the chunk backend
chosen, against the O(T^2) reference; and the backend choice itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO, rel_err
from tnlm.errors import ConfigError, InputError
from tnlm.ops.lightning import chunk, custom_op, lightning_attn, lightning_backend, naive_lightning_attn

TOL = 1e-5


@pytest.fixture(autouse=True)
def chunk_backend(monkeypatch):
    """Every test runs the block algorithm, with fresh buffers (outputs and the entry states the
    backward reads) filled with NaN, so an element the algorithm forgets to write cannot pass."""
    nan_filled = lambda like, *shape, dtype=None: like.new_full(shape, float("nan"), dtype=dtype)  # noqa: E731
    monkeypatch.setattr(chunk, "_empty", nan_filled)
    with lightning_backend("chunk"):
        yield


def make_inputs(B, T, H, Dk, Dv, *, seed=0, dtype=torch.float32, N=None):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, T, H, Dk, generator=g) for _ in range(2))
    v = torch.randn(B, T, H, Dv, generator=g)
    s0 = torch.randn(B if N is None else N, H, Dk, Dv, generator=g)
    # a spread of decays, from fast (lambda = e^-1) to almost none
    log_decay = -torch.logspace(0, -4, H)
    leaves = [x.to(dtype).requires_grad_() for x in (q, k, v)] + [s0.requires_grad_()]
    return leaves, log_decay


def fwd_bwd(fn, leaves, log_decay, *, seed=1, **kw):
    """Output, final state and the gradients of a random loss on both w.r.t. q, k, v, initial_state."""
    q, k, v, s0 = leaves
    o, final = fn(q, k, v, log_decay, initial_state=s0, output_final_state=True, **kw)
    g = torch.Generator().manual_seed(seed)
    do, dfinal = torch.randn(o.shape, generator=g), torch.randn(final.shape, generator=g)
    loss = (o.float() * do).sum() + (final * dfinal).sum()
    return [o, final, *torch.autograd.grad(loss, leaves)]


NAMES = ["o", "final_state", "dq", "dk", "dv", "d_initial_state"]
SHAPES = [  # B, T, H, Dk, Dv
    (2, 1, 2, 32, 32),
    (1, 63, 3, 32, 32),
    (2, 64, 2, 96, 96),
    (1, 65, 2, 128, 128),
    (2, 1000, 4, 96, 96),
    (1, 1000, 2, 64, 32),  # Dk != Dv (LRPE doubles Dk)
    (1, 1000, 2, 32, 128),
]


def shape_id(s):
    B, T, H, Dk, Dv = s
    return f"B{B}-T{T}-H{H}-D{Dk}" if Dk == Dv else f"B{B}-T{T}-H{H}-Dk{Dk}-Dv{Dv}"


def assert_close(got, want, tol=TOL):
    for name, a, b in zip(NAMES, got, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.isfinite(a).all(), f"{name} has NaN/inf (an unwritten element?)"
        assert rel_err(a, b) <= tol, f"{name}: rel err {rel_err(a, b):.2e}"


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_chunk_matches_naive(shape):
    leaves, log_decay = make_inputs(*shape)
    assert_close(fwd_bwd(lightning_attn, leaves, log_decay), fwd_bwd(naive_lightning_attn, leaves, log_decay))


def chunk_direct(q, k, v, log_decay, *, initial_state, output_final_state, block, segment, cu_seqlens=None):
    """chunk_fwd and chunk_bwd called by hand with other block and segment sizes, wrapped so that
    fwd_bwd can take its gradients: the algorithm alone, whatever the sizes the custom op uses."""

    class Direct(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v, s0):
            o, final, entries = chunk.chunk_fwd(q, k, v, log_decay, initial_state=s0, cu_seqlens=cu_seqlens,
                                                block=block, segment=segment)
            ctx.save_for_backward(q, k, v, s0, entries)
            return o, final

        @staticmethod
        def backward(ctx, do, d_final):
            q, k, v, s0, entries = ctx.saved_tensors
            return chunk.chunk_bwd(q, k, v, log_decay, do, initial_state=s0, d_final=d_final, entries=entries,
                                   cu_seqlens=cu_seqlens, block=block, segment=segment)

    return Direct.apply(q, k, v, initial_state)


@pytest.mark.parametrize("block,segment", [(16, 1), (16, 3), (32, 4), (64, 16)], ids=lambda x: str(x))
def test_many_segments_and_short_last_block(block, segment):
    """T = 1000 spans many segments and ends in a short block for every setting."""
    leaves, log_decay = make_inputs(1, 1000, 2, 48, 40, seed=3)
    got = fwd_bwd(chunk_direct, leaves, log_decay, block=block, segment=segment)
    assert_close(got, fwd_bwd(naive_lightning_attn, leaves, log_decay))


@pytest.mark.parametrize("block,segment", [(16, 1), (16, 3)], ids=lambda x: str(x))
def test_packed_sequences_cut_off_the_segment_grid(block, segment):
    """Sequences that start and end between multiples of the segment span: their first pieces start
    from their own initial states, the rest from the kept entry states."""
    lengths = [5, 40, 0, 77, 16, 33]
    leaves, log_decay = make_inputs(1, sum(lengths), 2, 16, 8, seed=10, N=len(lengths))
    cu = torch.tensor([0, *lengths]).cumsum(0)
    got = fwd_bwd(chunk_direct, leaves, log_decay, block=block, segment=segment, cu_seqlens=cu)
    assert_close(got, fwd_bwd(naive_one_by_one(cu), leaves, log_decay))


def test_entry_states_are_counted_by_the_cutting_function():
    """The custom op keeps one state per segment start, as many as chunk.segments cuts T into."""
    span = chunk.BLOCK * chunk.SEGMENT_BLOCKS
    for T in (1, span - 1, span, span + 1, 3 * span + 5):
        q = torch.randn(1, T, 1, 4)
        _, _, entries = torch.ops.tnlm.lightning_attn(q, q, q, torch.tensor([-0.5]), None, None)
        assert entries.shape == (len(chunk.segments(0, T, span)), 1, 1, 4, 4) == (-(-T // span), 1, 1, 4, 4)
    assert chunk.segments(3, 3, 8) == [] and chunk.segments(3, 20, 8) == [(3, 8), (8, 16), (16, 20)]


def test_public_entry_runs_the_block_algorithm_and_matches_naive(monkeypatch):
    calls = []
    monkeypatch.setattr(custom_op, "chunk_fwd", lambda *a, **kw: calls.append(1) or chunk.chunk_fwd(*a, **kw))
    leaves, log_decay = make_inputs(1, 300, 2, 32, 32, seed=4)
    got = fwd_bwd(lightning_attn, leaves, log_decay)
    assert calls and len(calls) == 1
    assert_close(got, fwd_bwd(naive_lightning_attn, leaves, log_decay))
    q, k, v, _ = leaves
    o, final = lightning_attn(q, k, v, log_decay)
    assert final is None and o.shape == v.shape


def test_backend_names_are_checked():
    with pytest.raises(ConfigError, match="auto, chunk, triton"):
        with lightning_backend("cuda"):
            pass


def test_backend_environment_variable_is_read_once_at_import(monkeypatch):
    monkeypatch.setenv("TNLM_LIGHTNING_BACKEND", "banana")  # after import: no effect
    q = torch.randn(1, 5, 1, 4)
    assert lightning_attn(q, q, q, torch.tensor([-0.5]))[0].shape == (1, 5, 1, 4)
    env = {**os.environ, "TNLM_LIGHTNING_BACKEND": "banana"}
    run = subprocess.run([sys.executable, "-c", "import tnlm.ops.lightning"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "ConfigError: TNLM_LIGHTNING_BACKEND must be one of auto, chunk, triton; got 'banana'" in run.stderr


def test_without_initial_state():
    (q, k, v, _), log_decay = make_inputs(2, 200, 2, 16, 16, seed=5)
    o1, f1 = lightning_attn(q, k, v, log_decay, output_final_state=True)
    o2, f2 = naive_lightning_attn(q, k, v, log_decay, output_final_state=True)
    assert rel_err(o1, o2) <= TOL and rel_err(f1, f2) <= TOL
    dq1, dk1 = torch.autograd.grad(o1.sum(), (q, k))
    dq2, dk2 = torch.autograd.grad(o2.sum(), (q, k))
    assert rel_err(dq1, dq2) <= TOL and rel_err(dk1, dk2) <= TOL


@pytest.mark.parametrize("split", [1, 64, 333])
def test_two_calls_equal_one(split):
    """Prefill hands its state on: [0, split) then [split, T) equals one call, gradients included."""
    leaves, log_decay = make_inputs(2, 400, 2, 32, 24, seed=6)
    q, k, v, s0 = leaves

    def two_calls(q, k, v, log_decay, *, initial_state, output_final_state):
        o1, s1 = lightning_attn(q[:, :split], k[:, :split], v[:, :split], log_decay,
                                initial_state=initial_state, output_final_state=True)
        o2, s2 = lightning_attn(q[:, split:], k[:, split:], v[:, split:], log_decay,
                                initial_state=s1, output_final_state=output_final_state)
        return torch.cat([o1, o2], 1), s2

    assert_close(fwd_bwd(two_calls, leaves, log_decay), fwd_bwd(lightning_attn, leaves, log_decay))


def test_bf16_inputs_accumulate_in_float32():
    leaves, log_decay = make_inputs(1, 500, 2, 64, 64, seed=7, dtype=torch.bfloat16)
    got = fwd_bwd(lightning_attn, leaves, log_decay)
    ref_leaves = [x.detach().float().requires_grad_() for x in leaves]
    want = fwd_bwd(naive_lightning_attn, ref_leaves, log_decay)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.float32
    for name, a, b in zip(NAMES, got, want):
        assert rel_err(a, b) <= 1e-2, name


def test_decay_extremes_stay_finite():
    """No decay at all, and a decay so fast that lambda^64 underflows to 0."""
    leaves, _ = make_inputs(1, 300, 2, 16, 16, seed=8)
    log_decay = torch.tensor([0.0, -30.0])
    assert_close(fwd_bwd(lightning_attn, leaves, log_decay), fwd_bwd(naive_lightning_attn, leaves, log_decay))


# ---- packed variable-length batches ---------------------------------------------------------------

LENGTHS = [[1000], [1, 63, 64, 65, 300], [130, 0, 7, 999], [5, 5, 5], [1000, 1100]]


def naive_one_by_one(cu: torch.Tensor):
    """The reference on each packed sequence alone, with its own initial state."""

    def run(q, k, v, log_decay, *, initial_state, output_final_state):
        outs = [
            naive_lightning_attn(q[:, a:b], k[:, a:b], v[:, a:b], log_decay,
                                 initial_state=initial_state[i : i + 1], output_final_state=True)
            for i, (a, b) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist()))
        ]
        return torch.cat([o for o, _ in outs], 1), torch.cat([s for _, s in outs])

    return run


@pytest.mark.parametrize("lengths", LENGTHS, ids=lambda x: "L" + "-".join(map(str, x)))
def test_cu_seqlens_equals_each_sequence_alone(lengths):
    T, N = sum(lengths), len(lengths)
    leaves, log_decay = make_inputs(1, T, 2, 32, 24, seed=9, N=N)
    cu = torch.tensor([0] + lengths).cumsum(0)
    got = fwd_bwd(lightning_attn, leaves, log_decay, cu_seqlens=cu)
    assert_close(got, fwd_bwd(naive_one_by_one(cu), leaves, log_decay))


@pytest.mark.parametrize(
    "cu,match",
    [([0, 5, 3, 10], "never decrease"), ([1, 10], "start at 0"), ([0, 9], "end at T"), ([0.0, 10.0], "integer")],
)
def test_cu_seqlens_validation(cu, match):
    (q, k, v, _), log_decay = make_inputs(1, 10, 2, 8, 8)
    with pytest.raises(InputError, match=match):
        lightning_attn(q, k, v, log_decay, cu_seqlens=torch.tensor(cu))
    with pytest.raises(InputError, match="1-D integer tensor"):  # one type everywhere: a tensor
        lightning_attn(q, k, v, log_decay, cu_seqlens=[0, 10])


def test_cu_seqlens_needs_batch_of_one_and_state_per_sequence():
    (q, k, v, _), log_decay = make_inputs(2, 10, 2, 8, 8)
    with pytest.raises(ValueError, match="B must be 1"):
        lightning_attn(q, k, v, log_decay, cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="initial_state"):
        lightning_attn(q[:1], k[:1], v[:1], log_decay, cu_seqlens=torch.tensor([0, 4, 10]),
                       initial_state=torch.zeros(1, 2, 8, 8))


def test_input_validation():
    (q, k, v, _), log_decay = make_inputs(1, 10, 2, 8, 8)
    with pytest.raises(ValueError, match="log_decay"):
        lightning_attn(q, k, v, log_decay[:1])
    with pytest.raises(ValueError, match="v must be"):
        lightning_attn(q, k, v[:, :5], log_decay)


def _allocated_bytes(step) -> int:
    """Bytes the CPU allocator handed out while `step` ran (every allocation, freed or not)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = prof.profiler.kineto_results.events()
    return sum(e.nbytes() for e in events if e.name() == "[memory]" and e.nbytes() > 0)


def test_segment_loop_allocates_only_its_outputs():
    """After the first segment the loop reuses its buffers: 8 more segments cost only their share
    of the outputs (o forwards; dq, dk, dv backwards) and one state each, no temporaries."""
    H, D, span = 2, 32, chunk.BLOCK * chunk.SEGMENT_BLOCKS
    a = -torch.logspace(0, -4, H)

    def volume(T):
        q, k, v, do = (torch.randn(1, T, H, D) for _ in range(4))
        fwd = _allocated_bytes(lambda: chunk.chunk_fwd(q, k, v, a, initial_state=None))
        entries = chunk.chunk_fwd(q, k, v, a, initial_state=None)[2]
        bwd = _allocated_bytes(
            lambda: chunk.chunk_bwd(q, k, v, a, do, initial_state=None, d_final=None, entries=entries)
        )
        return fwd, bwd

    (f1, b1), (f2, b2) = volume(4 * span), volume(12 * span)
    segment_rows, state = span * H * D * 4, H * D * D * 4
    assert (f2 - f1) / 8 <= 1.5 * (segment_rows + 2 * state), f"forward: {(f2 - f1) / 8:.0f} bytes per extra segment"
    assert (b2 - b1) / 8 <= 1.5 * (3 * segment_rows + 2 * state), f"backward: {(b2 - b1) / 8:.0f} bytes per extra segment"


def test_tables_built_under_inference_mode_serve_training():
    """The decay tables are cached across calls: tables first built inside inference_mode (a prefill)
    must serve a later training step with the same shapes (no inference tensor saved for backward),
    and a cached table must give exactly what a fresh one gives."""
    leaves, log_decay = make_inputs(1, 300, 3, 16, 8, seed=11)
    log_decay = log_decay * 0.731  # decays no other test uses: this call builds the tables
    chunk._TABLES.clear()
    with torch.inference_mode():
        o_inf, _ = lightning_attn(*(x.detach() for x in leaves[:3]), log_decay, initial_state=leaves[3].detach())
    assert len(chunk._TABLES) > 0
    got = fwd_bwd(lightning_attn, leaves, log_decay)
    assert_close(got, fwd_bwd(naive_lightning_attn, leaves, log_decay))
    assert torch.equal(o_inf, got[0].detach())
    chunk._TABLES.clear()
    assert torch.equal(got[0], fwd_bwd(lightning_attn, leaves, log_decay)[0])


def test_table_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(chunk, "_TABLES_MAX", 3)
    chunk._TABLES.clear()
    q = k = v = torch.randn(1, 70, 2, 4)
    for i in range(5):
        lightning_attn(q, k, v, torch.tensor([-0.1, -0.2]) * (i + 1))
    assert len(chunk._TABLES) == 3
