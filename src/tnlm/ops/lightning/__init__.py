"""Decayed linear attention (Lightning Attention), sequence-first: q, k (B, T, H, Dk), v (B, T, H, Dv).

`lightning_attn` is the one public entry point for training and prefill; it validates its inputs once
and calls the custom op `torch.ops.tnlm.lightning_attn` (its one autograd path), which runs the Triton
kernels on CUDA tensors and the block algorithm (chunk.py) elsewhere; `lightning_backend` overrides
that choice. `recurrent_lightning_attn` is the RNN form for decoding, `naive_lightning_attn` the O(T^2)
reference every fast path is tested against.
"""

from __future__ import annotations

import torch

from tnlm.errors import InputError
from tnlm.ops.lightning.custom_op import lightning_attn_op, lightning_backend
from tnlm.ops.lightning.naive import naive_lightning_attn
from tnlm.ops.lightning.recurrent import recurrent_lightning_attn

__all__ = ["lightning_attn", "lightning_backend", "naive_lightning_attn", "recurrent_lightning_attn"]


def _check_inputs(q, k, v, log_decay, initial_state, cu_seqlens) -> None:
    if q.dim() != 4 or k.shape != q.shape:
        raise InputError(f"q and k must both be (B, T, H, Dk); got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise InputError(f"v must be (B, T, H, Dv) matching q's (B, T, H); got {tuple(v.shape)}")
    H = q.shape[2]
    if log_decay.shape != (H,):
        raise InputError(f"log_decay must have shape ({H},), one value per head; got {tuple(log_decay.shape)}")
    N = q.shape[0]
    if cu_seqlens is not None:
        _check_cu_seqlens(cu_seqlens, B=q.shape[0], T=q.shape[1])
        N = cu_seqlens.numel() - 1
    if initial_state is not None:
        want = (N, H, q.shape[3], v.shape[3])
        if tuple(initial_state.shape) != want:
            raise InputError(f"initial_state must be (N, H, Dk, Dv) = {want}; got {tuple(initial_state.shape)}")


def _check_cu_seqlens(cu_seqlens: torch.Tensor, *, B: int, T: int) -> None:
    if B != 1:
        raise InputError(f"with cu_seqlens the sequences are packed along T and B must be 1; got B={B}")
    tensor = isinstance(cu_seqlens, torch.Tensor)
    if not tensor or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.is_floating_point():
        raise InputError("cu_seqlens must be a 1-D integer tensor [0, len_0, len_0 + len_1, ..., T]")
    if torch.compiler.is_compiling():
        return  # the values are data: checking them would break the graph
    c = cu_seqlens.tolist()
    if c[0] != 0 or c[-1] != T or any(b < a for a, b in zip(c[:-1], c[1:])):
        raise InputError(f"cu_seqlens must start at 0, never decrease and end at T={T}; got {c}")


def lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """o_t = sum_{s<=t} exp(log_decay * (t - s)) (q_t . k_s) v_s, per head; no scaling, no softmax.

    q, k: (B, T, H, Dk); v: (B, T, H, Dv); log_decay: (H,) <= 0, receives no gradient.
    initial_state: (N, H, Dk, Dv), the state before the first token (N = B, or the number of sequences).
    cu_seqlens: (N + 1,) integer tensor, offsets of N sequences packed along T (B = 1); the state
    restarts at every boundary, exactly as if each sequence were processed alone.
    Returns (o, final_state); final_state is (N, H, Dk, Dv) float32 when `output_final_state`.

    >>> q = k = torch.randn(1, 5, 2, 4); v = torch.randn(1, 5, 2, 3)
    >>> o, s = lightning_attn(q, k, v, torch.tensor([-0.5, -0.1]), output_final_state=True)
    >>> o.shape, s.shape
    (torch.Size([1, 5, 2, 3]), torch.Size([1, 2, 4, 3]))
    """
    _check_inputs(q, k, v, log_decay, initial_state, cu_seqlens)
    o, final, _ = lightning_attn_op(q, k, v, log_decay, initial_state, cu_seqlens)
    return o, (final if output_final_state else None)
