"""Launchers and the autograd wrapper of the Triton Lightning Attention kernels.

Used automatically for CUDA tensors; the tests also run them on the CPU under TRITON_INTERPRET=1
(set before triton is imported). One fixed configuration, no autotuning.
"""

from __future__ import annotations

import torch
import triton

from tnlm.ops.lightning.triton.kernels import (
    lightning_bwd_dk_kernel,
    lightning_bwd_dq_kernel,
    lightning_bwd_dv_kernel,
    lightning_fwd_kernel,
)

BLOCK_T = 64  # tokens per block, as in the official kernel


def _empty(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer comes from here; the tests fill it with NaN so an unwritten element fails."""
    return like.new_empty(shape, dtype=dtype or like.dtype)


def _tiles(dk: int, dv: int) -> dict[str, int]:
    """Feature tiles: the full dimension padded to a power of two, or a tile of it."""
    full_k, full_v = max(16, triton.next_power_of_2(dk)), max(16, triton.next_power_of_2(dv))
    return {"full_k": full_k, "full_v": full_v, "tile_k": min(full_k, 64), "tile_v": min(full_v, 64 if full_k <= 128 else 32)}


def _common(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None) -> dict:
    B, T, H, DK = q.shape
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    cu = cu_seqlens if cu_seqlens is not None else q.new_zeros(1, dtype=torch.int32)
    prec = "ieee" if q.dtype == torch.float32 else "tf32"
    meta = dict(H=H, DK=DK, DV=v.shape[-1], BT=BLOCK_T, VARLEN=cu_seqlens is not None, PREC=prec)
    return {"N": N, "T": T, "cu": cu, "meta": meta}


def triton_fwd(q, k, v, log_decay, *, initial_state, cu_seqlens):
    """q, k (B, T, H, DK), v (B, T, H, DV), contiguous -> o (B, T, H, DV), final state (N, H, DK, DV) float32."""
    c, tiles = _common(q, v, cu_seqlens), _tiles(q.shape[-1], v.shape[-1])
    DK, DV = q.shape[-1], v.shape[-1]
    o = _empty(v, *v.shape, dtype=q.dtype)
    final = _empty(q, c["N"], q.shape[2], DK, DV, dtype=torch.float32)
    s0 = initial_state if initial_state is not None else final
    grid = (triton.cdiv(DV, tiles["tile_v"]), c["N"] * q.shape[2])
    lightning_fwd_kernel[grid](
        q, k, v, o, s0, final, log_decay, c["cu"], c["T"],
        BK=tiles["full_k"], BV=tiles["tile_v"], HAS_S0=initial_state is not None, **c["meta"],
    )
    return o, final


def triton_bwd(q, k, v, log_decay, do, *, initial_state, d_final, cu_seqlens):
    """Returns dq, dk, dv in the inputs' dtypes and d initial_state (N, H, DK, DV) float32."""
    c, tiles = _common(q, v, cu_seqlens), _tiles(q.shape[-1], v.shape[-1])
    H, DK, DV = q.shape[2], q.shape[-1], v.shape[-1]
    dq, dk, dv = _empty(q, *q.shape), _empty(k, *k.shape), _empty(v, *v.shape)
    d_init = _empty(q, c["N"], H, DK, DV, dtype=torch.float32)
    s0 = initial_state if initial_state is not None else d_init
    dsn = d_final if d_final is not None else d_init
    grid_k = (triton.cdiv(DK, tiles["tile_k"]), c["N"] * H)
    grid_v = (triton.cdiv(DV, tiles["tile_v"]), c["N"] * H)
    lightning_bwd_dq_kernel[grid_k](
        k, v, do, dq, s0, log_decay, c["cu"], c["T"],
        BK=tiles["tile_k"], BV=tiles["full_v"], HAS_S0=initial_state is not None, **c["meta"],
    )
    lightning_bwd_dk_kernel[grid_k](
        q, v, do, dk, dsn, d_init, log_decay, c["cu"], c["T"],
        BK=tiles["tile_k"], BV=tiles["full_v"], HAS_DSN=d_final is not None, **c["meta"],
    )
    lightning_bwd_dv_kernel[grid_v](
        q, k, do, dv, dsn, log_decay, c["cu"], c["T"],
        BK=tiles["full_k"], BV=tiles["tile_v"], HAS_DSN=d_final is not None, **c["meta"],
    )
    return dq, dk, dv, d_init


def _prepare(q, k, v, log_decay, initial_state, cu_seqlens):
    # tl.dot needs both operands in one dtype: k and v follow q
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    log_decay = log_decay.detach().float().contiguous()
    s0 = None if initial_state is None else initial_state.detach().float().contiguous()
    return q, k, v, log_decay, s0, cu_seqlens


class TritonLightningAttn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, log_decay, initial_state, cu_seqlens):
        q, k, v, log_decay, s0, cu = _prepare(q, k, v, log_decay, initial_state, cu_seqlens)
        o, final = triton_fwd(q, k, v, log_decay, initial_state=s0, cu_seqlens=cu)
        ctx.save_for_backward(q, k, v, log_decay, s0, cu)
        ctx.state_dtype = None if initial_state is None else initial_state.dtype
        return o, final

    @staticmethod
    def backward(ctx, do, d_final):
        q, k, v, log_decay, s0, cu = ctx.saved_tensors
        d_final = None if d_final is None else d_final.float().contiguous()
        dq, dk, dv, d_init = triton_bwd(
            q, k, v, log_decay, do.contiguous(), initial_state=s0, d_final=d_final, cu_seqlens=cu
        )
        d_init = None if ctx.state_dtype is None else d_init.to(ctx.state_dtype)
        return dq, dk, dv, None, d_init, None


def triton_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Same contract as `lightning_attn`; `cu_seqlens` is an int32/int64 tensor on the inputs' device."""
    o, final = TritonLightningAttn.apply(q, k, v, log_decay, initial_state, cu_seqlens)
    return o, (final if output_final_state else None)
