"""`torch.ops.tnlm.lightning_attn`: the block algorithm as a torch.library custom op.

One opaque op with a fake (meta) implementation and a registered backward, so `torch.compile`
(fullgraph=True) traces a TransNormer block without a graph break, and eager mode pays only the
dispatch. The implementation picks the Triton kernels for CUDA tensors and chunk.py elsewhere.

The forward also returns the per-segment entry states of chunk.py (what its backward keeps), padded
to a length known from the shapes alone so that the fake implementation can state it.
"""

from __future__ import annotations

import importlib.util
import os

import torch

from tnlm.ops.lightning.chunk import BLOCK, SEGMENT_BLOCKS, chunk_bwd, chunk_fwd

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_SPAN = BLOCK * SEGMENT_BLOCKS


def _use_triton(x: torch.Tensor) -> bool:
    """Triton for CUDA tensors, chunk.py elsewhere. TNLM_LIGHTNING_BACKEND=chunk forces the PyTorch
    block algorithm (to compare on a GPU); =triton forces the kernels, which on a CPU run only under
    TRITON_INTERPRET=1 (how the tests run a whole model through them)."""
    forced = os.environ.get("TNLM_LIGHTNING_BACKEND")
    if forced not in (None, "", "triton", "chunk"):
        raise ValueError(f"TNLM_LIGHTNING_BACKEND must be 'triton' or 'chunk', got {forced!r}")
    if forced:
        return forced == "triton" and _HAS_TRITON
    return x.is_cuda and _HAS_TRITON


def _n_entries(T: int, n_seq: int, varlen: bool) -> int:
    """Segments of chunk.py: ceil(T / span), plus at most one partial segment per packed sequence."""
    return -(-T // _SPAN) + (n_seq if varlen else 0)


def _entries_shape(q, v, cu_seqlens) -> tuple[int, ...]:
    B, T, H, Dk = q.shape
    n_seq = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    n = 0 if _use_triton(q) else _n_entries(T, n_seq, cu_seqlens is not None)
    return (n, 1 if cu_seqlens is not None else B, H, Dk, v.shape[-1])


@torch.library.custom_op("tnlm::lightning_attn", mutates_args=())
def lightning_attn_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    initial_state: torch.Tensor | None,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns o (B, T, H, Dv), final state (N, H, Dk, Dv) float32, entry states (for the backward)."""
    if _use_triton(q):
        from tnlm.ops.lightning.triton import _prepare, triton_fwd

        q, k, v, log_decay, s0, cu = _prepare(q, k, v, log_decay, initial_state, cu_seqlens)
        o, final = triton_fwd(q, k, v, log_decay, initial_state=s0, cu_seqlens=cu)
        return o, final, q.new_zeros(_entries_shape(q, v, cu_seqlens), dtype=torch.float32)
    cu = None if cu_seqlens is None else cu_seqlens.tolist()
    o, final, entries = chunk_fwd(q, k, v, log_decay, initial_state=initial_state, cu_seqlens=cu)
    padded = entries.new_zeros(_entries_shape(q, v, cu_seqlens))
    padded[: len(entries)] = entries
    return o, final, padded


@lightning_attn_op.register_fake
def _(q, k, v, log_decay, initial_state, cu_seqlens):
    B, T, H, Dk = q.shape
    n_seq = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    o = q.new_empty(B, T, H, v.shape[-1])
    final = q.new_empty(n_seq, H, Dk, v.shape[-1], dtype=torch.float32)
    return o, final, q.new_empty(_entries_shape(q, v, cu_seqlens), dtype=torch.float32)


@torch.library.custom_op("tnlm::lightning_attn_bwd", mutates_args=())
def lightning_attn_bwd_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    do: torch.Tensor,
    d_final: torch.Tensor,
    initial_state: torch.Tensor | None,
    entries: torch.Tensor,
    cu_seqlens: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns dq, dk, dv (inputs' dtypes) and d initial_state (N, H, Dk, Dv) float32."""
    if _use_triton(q):
        from tnlm.ops.lightning.triton import _prepare, triton_bwd

        q, k, v, log_decay, s0, cu = _prepare(q, k, v, log_decay, initial_state, cu_seqlens)
        return triton_bwd(q, k, v, log_decay, do.contiguous(), initial_state=s0,
                          d_final=d_final.float().contiguous(), cu_seqlens=cu)
    cu = None if cu_seqlens is None else cu_seqlens.tolist()
    n_used = sum(-(-(b - a) // _SPAN) for a, b in zip(cu[:-1], cu[1:])) if cu else len(entries)
    return chunk_bwd(q, k, v, log_decay, do, d_final=d_final, entries=entries[:n_used], cu_seqlens=cu)


@lightning_attn_bwd_op.register_fake
def _(q, k, v, log_decay, do, d_final, initial_state, entries, cu_seqlens):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(d_final)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, log_decay, initial_state, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, log_decay, initial_state, output[2], cu_seqlens)
    ctx.state_dtype = None if initial_state is None else initial_state.dtype


def _backward(ctx, do, d_final, _d_entries):
    q, k, v, log_decay, initial_state, entries, cu_seqlens = ctx.saved_tensors
    if d_final is None:
        n_seq = q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1
        d_final = q.new_zeros(n_seq, q.shape[2], q.shape[3], v.shape[-1], dtype=torch.float32)
    dq, dk, dv, d_init = lightning_attn_bwd_op(
        q, k, v, log_decay, do, d_final, initial_state, entries, cu_seqlens
    )
    d_init = None if ctx.state_dtype is None else d_init.to(ctx.state_dtype)
    return dq, dk, dv, None, d_init, None


lightning_attn_op.register_autograd(_backward, setup_context=_setup_context)
