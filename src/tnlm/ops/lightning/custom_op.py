"""`torch.ops.tnlm.lightning_attn`: Lightning Attention as a torch.library custom op, its one autograd path.

One opaque op with a fake (meta) implementation and a registered backward, so `torch.compile`
(fullgraph=True) traces a TransNormer block without a graph break, and eager mode pays only the
dispatch. The implementation runs the Triton kernels or the block algorithm of chunk.py; which one
is decided by `lightning_backend` (below).

The forward also returns what chunk.py's backward keeps, the state entering each segment; how many
there are comes from `chunk.segments`, the function that cuts the sequence, so the fake
implementation states the same shape. The Triton backward recomputes its states and keeps none.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Iterator

import torch

from tnlm.errors import ConfigError
from tnlm.ops.lightning.chunk import BLOCK, SEGMENT_BLOCKS, chunk_bwd, chunk_fwd, segments

BACKENDS = ("auto", "chunk", "triton")
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def _checked_backend(name: str, source: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "triton" and not _HAS_TRITON:
        raise ConfigError(f"{source}=triton needs the triton package: pip install triton")
    return name


# read once, at import: TNLM_LIGHTNING_BACKEND=chunk compares the block algorithm with the kernels
# on a GPU; =triton runs the kernels on a CPU under TRITON_INTERPRET=1 (how the tests run them)
_backend = _checked_backend(os.environ.get("TNLM_LIGHTNING_BACKEND") or "auto", "TNLM_LIGHTNING_BACKEND")


@contextlib.contextmanager
def lightning_backend(name: str) -> Iterator[None]:
    """Run every `lightning_attn` inside the block on one backend: "triton" (the kernels), "chunk"
    (the PyTorch block algorithm, any device) or "auto" (Triton for CUDA tensors, chunk elsewhere).
    The default is "auto", or what TNLM_LIGHTNING_BACKEND said when tnlm was imported."""
    global _backend
    before, _backend = _backend, _checked_backend(name, "the Lightning Attention backend")
    try:
        yield
    finally:
        _backend = before


def _use_triton(x: torch.Tensor) -> bool:
    if _backend == "auto":
        return x.is_cuda and _HAS_TRITON
    return _backend == "triton"


def _entries_shape(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None) -> tuple[int, ...]:
    B, T, H, Dk = q.shape
    n = 0 if _use_triton(q) else len(segments(0, T, BLOCK * SEGMENT_BLOCKS))
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
        from tnlm.ops.lightning.triton import prepare_inputs, triton_fwd

        q, k, v, log_decay, s0 = prepare_inputs(q, k, v, log_decay, initial_state)
        o, final = triton_fwd(q, k, v, log_decay, initial_state=s0, cu_seqlens=cu_seqlens)
        return o, final, q.new_zeros(_entries_shape(q, v, cu_seqlens), dtype=torch.float32)
    return chunk_fwd(q, k, v, log_decay, initial_state=initial_state, cu_seqlens=cu_seqlens)


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
        from tnlm.ops.lightning.triton import prepare_inputs, triton_bwd

        q, k, v, log_decay, s0 = prepare_inputs(q, k, v, log_decay, initial_state)
        return triton_bwd(q, k, v, log_decay, do.contiguous(), initial_state=s0,
                          d_final=d_final.float().contiguous(), cu_seqlens=cu_seqlens)  # fmt: skip
    return chunk_bwd(q, k, v, log_decay, do.contiguous(), initial_state=initial_state, d_final=d_final,
                     entries=entries, cu_seqlens=cu_seqlens)  # fmt: skip


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
