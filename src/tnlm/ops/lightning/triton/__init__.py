"""Launchers of the Triton Lightning Attention kernels, called by the custom op (custom_op.py).

Used for CUDA tensors; the tests also run them on the CPU under TRITON_INTERPRET=1 (set before
triton is imported). One fixed configuration per kernel, no autotuning.
"""

from __future__ import annotations

import torch
import triton

from tnlm.ops.lightning.triton.kernels import (
    lightning_bwd_dqk_kernel,
    lightning_bwd_dv_kernel,
    lightning_output_kernel,
    lightning_states_bwd_kernel,
    lightning_states_fwd_kernel,
)

BLOCK_T = 64  # tokens per block, as in the official kernel

# Feature tile and warps per kernel, one fixed configuration each (the interpreter cannot autotune).
# Chosen without a GPU by compiling for sm_90 and reading registers and spills from the cubin
# (benchmarks/triton_resources.py): none of these spills in bf16. Narrow tiles for the sequential
# state walks give B = 1, H = 8 enough programs to fill a GPU; the parallel kernels have plenty.
# float32 inputs take twice the registers: every kernel then uses tiles of FP32_TILE.
FP32_TILE = 32
CONFIGS = {
    "states": {"tile": 32, "num_warps": 4},
    "output": {"tile": 64, "num_warps": 8},
    "dqk": {"tile": 32, "num_warps": 8},
    "dv": {"tile": 64, "num_warps": 8},
}


def _empty(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Every output buffer comes from here; the tests fill it with NaN so an unwritten element fails."""
    return like.new_empty(shape, dtype=dtype or like.dtype)


def _layout(q: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None) -> dict:
    """Sequences, blocks and the launch constants shared by every kernel."""
    B, T, H, DK = q.shape
    DV = v.shape[-1]
    meta = dict(H=H, DK=DK, DV=DV, BT=BLOCK_T, VARLEN=cu_seqlens is not None,
                PREC="ieee" if q.dtype == torch.float32 else "tf32")
    if cu_seqlens is None:
        N, n_blocks = B, B * triton.cdiv(T, BLOCK_T)
        cu = first = blocks = q.new_zeros(1, dtype=torch.int32)
    else:
        # the per-sequence block counts decide the grid: one host sync, as every varlen kernel needs
        lengths = cu_seqlens.diff().tolist()
        per_seq = [triton.cdiv(n, BLOCK_T) for n in lengths]
        N, n_blocks = len(lengths), sum(per_seq)
        cu = cu_seqlens.to(torch.int32)
        starts = torch.tensor([0, *per_seq[:-1]]).cumsum(0)
        first = starts.to(device=q.device, dtype=torch.int32)
        blocks = torch.tensor([(n, j) for n, c in enumerate(per_seq) for j in range(c)] or [(0, 0)],
                              dtype=torch.int32).to(q.device)
    return {"N": N, "T": T, "H": H, "n_blocks": n_blocks, "cu": cu, "first": first, "blocks": blocks,
            "meta": meta}


def _config(kernel: str, meta: dict) -> dict:
    """BK, BV and num_warps of one kernel: its tile, or the whole (power-of-two) dimension if smaller."""
    c = CONFIGS[kernel]
    width = FP32_TILE if meta["PREC"] == "ieee" else c["tile"]
    tile = lambda d: min(width, max(16, triton.next_power_of_2(d)))  # noqa: E731
    return {"BK": tile(meta["DK"]), "BV": tile(meta["DV"]), "num_warps": c["num_warps"], **meta}


def _states(k, v, log_decay, s0, lay, *, final: torch.Tensor | None) -> torch.Tensor:
    """The state entering every block, (blocks, H, DK, DV) in the inputs' dtype; fills `final`."""
    m = _config("states", lay["meta"])
    hs = _empty(k, lay["n_blocks"], lay["H"], m["DK"], m["DV"])
    grid = (triton.cdiv(m["DK"], m["BK"]), triton.cdiv(m["DV"], m["BV"]), lay["N"] * lay["H"])
    lightning_states_fwd_kernel[grid](
        k, v, hs, s0 if s0 is not None else hs, final if final is not None else hs, log_decay,
        lay["cu"], lay["first"], lay["T"], HAS_S0=s0 is not None, STORE_FINAL=final is not None, **m,
    )
    return hs


def triton_fwd(q, k, v, log_decay, *, initial_state, cu_seqlens):
    """q, k (B, T, H, DK), v (B, T, H, DV), contiguous -> o (B, T, H, DV), final state (N, H, DK, DV) float32."""
    lay = _layout(q, v, cu_seqlens)
    m = _config("output", lay["meta"])
    final = _empty(q, lay["N"], lay["H"], m["DK"], m["DV"], dtype=torch.float32)
    hs = _states(k, v, log_decay, initial_state, lay, final=final)
    o = _empty(v, *v.shape, dtype=q.dtype)
    grid = (triton.cdiv(m["DV"], m["BV"]), lay["n_blocks"], lay["H"])
    lightning_output_kernel[grid](q, k, v, o, hs, log_decay, lay["cu"], lay["blocks"], lay["T"], **m)
    return o, final


def triton_bwd(q, k, v, log_decay, do, *, initial_state, d_final, cu_seqlens):
    """Returns dq, dk, dv in the inputs' dtypes and d initial_state (N, H, DK, DV) float32.
    The per-block states are recomputed rather than kept from the forward: memory stays O(T d)."""
    lay = _layout(q, v, cu_seqlens)
    m = _config("states", lay["meta"])
    hs = _states(k, v, log_decay, initial_state, lay, final=None)
    dhs = _empty(q, lay["n_blocks"], lay["H"], m["DK"], m["DV"])
    d_init = _empty(q, lay["N"], lay["H"], m["DK"], m["DV"], dtype=torch.float32)
    grid = (triton.cdiv(m["DK"], m["BK"]), triton.cdiv(m["DV"], m["BV"]), lay["N"] * lay["H"])
    lightning_states_bwd_kernel[grid](
        q, do, dhs, d_final if d_final is not None else d_init, d_init, log_decay,
        lay["cu"], lay["first"], lay["T"], HAS_DSN=d_final is not None, **m,
    )
    dq, dk, dv = _empty(q, *q.shape), _empty(k, *k.shape), _empty(v, *v.shape)
    m = _config("dqk", lay["meta"])
    grid = (triton.cdiv(m["DK"], m["BK"]), lay["n_blocks"], lay["H"])
    lightning_bwd_dqk_kernel[grid](q, k, v, do, hs, dhs, dq, dk, log_decay, lay["cu"], lay["blocks"], lay["T"], **m)
    m = _config("dv", lay["meta"])
    grid = (triton.cdiv(m["DV"], m["BV"]), lay["n_blocks"], lay["H"])
    lightning_bwd_dv_kernel[grid](q, k, do, dhs, dv, log_decay, lay["cu"], lay["blocks"], lay["T"], **m)
    return dq, dk, dv, d_init


def prepare_inputs(q, k, v, log_decay, initial_state):
    """Contiguous inputs in q's dtype (tl.dot needs both operands in one dtype), float32 decays and state."""
    q, k, v = q.contiguous(), k.to(q.dtype).contiguous(), v.to(q.dtype).contiguous()
    log_decay = log_decay.detach().float().contiguous()
    s0 = None if initial_state is None else initial_state.detach().float().contiguous()
    return q, k, v, log_decay, s0
