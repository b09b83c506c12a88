"""Memory of the block algorithm: forward + backward at T = 16384 stays far below one T x T matrix.

Peak memory is measured from the profiler's record of every CPU allocation and free (c10 allocator
events, in time order); the first test checks that this measurement sees a T x T matrix when the
O(T^2) reference forms one, so the main test cannot pass by measuring nothing.
"""

from __future__ import annotations

import torch
from torch.profiler import ProfilerActivity, profile

from tnlm.ops.lightning import lightning_attn, naive_lightning_attn


def peak_cpu_bytes(fn) -> int:
    """Highest total of live CPU bytes allocated while `fn()` runs (tensors alive before are not counted)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def fwd_bwd(attn, T: int, H: int = 1, D: int = 64) -> int:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, T, H, D, generator=g).requires_grad_() for _ in range(3))
    log_decay = torch.full((H,), -0.01)

    def run():
        o, _ = attn(q, k, v, log_decay)
        o.backward(torch.ones_like(o))

    run()  # warm up: one-time allocations are not part of the algorithm
    return peak_cpu_bytes(run)


def test_measurement_sees_a_quadratic_matrix():
    T = 2048
    assert fwd_bwd(naive_lightning_attn, T) >= T * T * 4


def test_fwd_bwd_at_16k_tokens_is_far_below_one_t_by_t_matrix():
    T, H, D = 16384, 1, 64
    peak = fwd_bwd(lightning_attn, T, H, D)
    txt = T * T * 4  # one float32 T x T matrix: 1 GiB
    io = 7 * T * H * D * 4  # q, k, v, o, dq, dk, dv: the least any implementation needs
    assert peak < txt / 32, f"peak {peak / 2**20:.1f} MiB"
    assert peak < 3 * io, f"peak {peak / 2**20:.1f} MiB vs {io / 2**20:.1f} MiB of inputs and outputs"
