"""Triton kernels of the Lightning Attention-2 block algorithm (see ../README.md for the math).

The work is split so that only a cheap part is sequential along the sequence:
  states     one program per (sequence, head, Dk tile, Dv tile) walks the blocks in order, keeping its
             tile of the state in float32 registers, and writes the state entering every block;
  output     one program per (block, head, Dv tile), all in parallel: the exact in-block product
             plus the stored state entering the block.
The backward mirrors it: the states are recomputed, a reverse walk writes the gradient of the state
leaving every block, then one parallel kernel gives dq and dk and another dv. So a batch of one
sequence with eight heads still fills a GPU: the parallel kernels have T/64 x H x tiles programs.

Products take the input dtype (bf16/fp16 tensor cores, or exact fp32 with PREC="ieee") and accumulate
in float32; every decay factor is exp(a x) with a <= 0 and x >= 0, so none exceeds 1. The stored
per-block states are in the input dtype, as the products that read them need.

Tensors are (B*T, H, D) row-major; sequence n spans rows [bos, eos): n*T .. (n+1)*T, or the
cu_seqlens offsets when VARLEN. Block b of sequence n is global block FIRST[n] + b; the per-block
states are (blocks, H, DK, DV). The parallel kernels find their sequence in BLOCKS (VARLEN only):
one (sequence, block within it) pair per global block.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sequence(CU, FIRST, i_n, T, BT: tl.constexpr, VARLEN: tl.constexpr):
    """Rows [bos, eos) of sequence i_n and the global index of its first block."""
    if VARLEN:
        bos = tl.load(CU + i_n).to(tl.int64)
        eos = tl.load(CU + i_n + 1).to(tl.int64)
        first = tl.load(FIRST + i_n).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        first = i_n.to(tl.int64) * tl.cdiv(T, BT)
    return bos, eos, first


@triton.jit
def _block(CU, BLOCKS, i_b, T, BT: tl.constexpr, VARLEN: tl.constexpr):
    """Global block i_b -> its first row and the end of its sequence."""
    if VARLEN:
        i_n = tl.load(BLOCKS + 2 * i_b)
        j = tl.load(BLOCKS + 2 * i_b + 1).to(tl.int64)
        bos = tl.load(CU + i_n).to(tl.int64)
        eos = tl.load(CU + i_n + 1).to(tl.int64)
    else:
        nt = tl.cdiv(T, BT)
        i_n, j = i_b // nt, (i_b % nt).to(tl.int64)
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    return bos + j * BT, eos


@triton.jit
def _decays(a, BT: tl.constexpr):
    """t (BT,), lambda^(t+1) (BT,), and M[t, s] = lambda^(t-s) for t >= s else 0 (BT, BT)."""
    t = tl.arange(0, BT).to(tl.float32)
    q_decay = tl.exp(a * (t + 1.0))
    diff = t[:, None] - t[None, :]
    m = tl.where(diff >= 0, tl.exp(a * tl.maximum(diff, 0.0)), 0.0)
    return t, q_decay, m


@triton.jit
def _expm1(x):
    """exp(x) - 1 without cancellation for small |x|: the slowest heads decay by 1 - 3e-6 per block,
    and float32 rounding of exp(x) itself would bias the state by up to 1% of that every block."""
    return tl.where(tl.abs(x) < 1e-3, x * (1.0 + x * (0.5 + x * (1.0 / 6.0))), tl.exp(x) - 1.0)


@triton.jit
def _k_decay(a, t, c):
    """lambda^(c-1-t) inside a block of c real tokens, 0 on its padding."""
    return tl.where(t < c, tl.exp(a * tl.maximum(c - 1.0 - t, 0.0)), 0.0)


@triton.jit
def _tile_ptrs(X, rows, i_h, cols, H: tl.constexpr, D: tl.constexpr):
    """Pointers to rows x cols of head i_h of a (rows, H, D) tensor."""
    return X + rows[:, None] * (H * D) + i_h * D + cols[None, :]


@triton.jit
def _tile(X, rows, mr, i_h, cols, mc, H: tl.constexpr, D: tl.constexpr):
    """Rows x cols of head i_h of a (rows, H, D) tensor, zero outside the masks."""
    return tl.load(_tile_ptrs(X, rows, i_h, cols, H, D), mask=mr[:, None] & mc[None, :], other=0.0)


@triton.jit
def _state_ptrs(S, i_s, i_h, o_k, o_v, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr):
    return S + (i_s * H + i_h) * DK * DV + o_k[:, None] * DV + o_v[None, :]


@triton.jit
def _over_dk(A, B, S, i_b, rows, mr, i_h, o_v, mv, H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
             BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr, PREC: tl.constexpr):
    """(A B^T, A S) for one block, summed over Dk tiles: A, B are (rows, H, DK) inputs and S the
    block's (DK, BV tile) state. The output kernel takes (Q, K, S), the dv kernel (K, Q, dG)."""
    ab = tl.zeros([BT, BT], dtype=tl.float32)
    a_s = tl.zeros([BT, BV], dtype=tl.float32)
    for i_k in range(0, tl.cdiv(DK, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        mk = o_k < DK
        a = _tile(A, rows, mr, i_h, o_k, mk, H, DK)
        b = _tile(B, rows, mr, i_h, o_k, mk, H, DK)
        s = tl.load(_state_ptrs(S, i_b.to(tl.int64), i_h, o_k, o_v, H, DK, DV), mask=mk[:, None] & mv[None, :], other=0.0)
        ab += tl.dot(a, tl.trans(b), input_precision=PREC)
        a_s += tl.dot(a, s, input_precision=PREC)
    return ab, a_s


@triton.jit
def lightning_states_fwd_kernel(
    K, V, HS, S0, SN, LOG_DECAY, CU, FIRST, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, STORE_FINAL: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DK, BK), cdiv(DV, BV), N*H). HS[block] = the state entering the block;
    S_next = S + (lambda^c - 1) S + (Gamma K)^T V over a block of c tokens."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos, first = _sequence(CU, FIRST, i_n, T, BT, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t = tl.arange(0, BT).to(tl.float32)
    o_t, o_k, o_v = tl.arange(0, BT), i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    ms = mk[:, None] & mv[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_S0:
        state += tl.load(_state_ptrs(S0, i_n.to(tl.int64), i_h, o_k, o_v, H, DK, DV), mask=ms, other=0.0)
    n_blocks = tl.cdiv(eos - bos, BT)
    for i in range(0, n_blocks):
        tl.store(_state_ptrs(HS, first + i, i_h, o_k, o_v, H, DK, DV), state.to(HS.dtype.element_ty), mask=ms)
        start = bos + i * BT
        rows = start + o_t
        mr = rows < eos
        k = _tile(K, rows, mr, i_h, o_k, mk, H, DK)
        v = _tile(V, rows, mr, i_h, o_v, mv, H, DV)
        c = tl.minimum(eos - start, BT).to(tl.float32)
        kd = (k * _k_decay(a, t, c)[:, None]).to(k.dtype)
        state += state * _expm1(a * c) + tl.dot(tl.trans(kd), v, input_precision=PREC)
    if STORE_FINAL:
        tl.store(_state_ptrs(SN, i_n.to(tl.int64), i_h, o_k, o_v, H, DK, DV), state, mask=ms)


@triton.jit
def lightning_output_kernel(
    Q, K, V, O, HS, LOG_DECAY, CU, BLOCKS, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DV, BV), blocks, H). O = ((Q K^T) * M) V + Lambda Q S, S the state entering the block."""
    i_v, i_b, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, eos = _block(CU, BLOCKS, i_b, T, BT, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    rows, o_v = start + tl.arange(0, BT), i_v * BV + tl.arange(0, BV)
    mr, mv = rows < eos, o_v < DV
    qk, o = _over_dk(Q, K, HS, i_b, rows, mr, i_h, o_v, mv, H, DK, DV, BT, BK, BV, PREC)
    v = _tile(V, rows, mr, i_h, o_v, mv, H, DV)
    o = o * q_decay[:, None] + tl.dot((qk * m).to(v.dtype), v, input_precision=PREC)
    tl.store(_tile_ptrs(O, rows, i_h, o_v, H, DV), o.to(O.dtype.element_ty), mask=mr[:, None] & mv[None, :])


@triton.jit
def lightning_states_bwd_kernel(
    Q, DO, DHS, DSN, DS0, LOG_DECAY, CU, FIRST, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSN: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DK, BK), cdiv(DV, BV), N*H), walking backwards. DHS[block] = dG, the gradient of
    the state leaving the block; the state entering it gets lambda^c dG + (Lambda Q)^T dO."""
    i_k, i_v, i_nh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos, first = _sequence(CU, FIRST, i_n, T, BT, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    q_decay = tl.exp(a * (tl.arange(0, BT).to(tl.float32) + 1.0))
    o_t, o_k, o_v = tl.arange(0, BT), i_k * BK + tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    ms = mk[:, None] & mv[None, :]
    dstate = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DSN:
        dstate += tl.load(_state_ptrs(DSN, i_n.to(tl.int64), i_h, o_k, o_v, H, DK, DV), mask=ms, other=0.0)
    n_blocks = tl.cdiv(eos - bos, BT)
    for i in range(0, n_blocks):
        j = n_blocks - 1 - i
        tl.store(_state_ptrs(DHS, first + j, i_h, o_k, o_v, H, DK, DV), dstate.to(DHS.dtype.element_ty), mask=ms)
        start = bos + j * BT
        rows = start + o_t
        mr = rows < eos
        q = _tile(Q, rows, mr, i_h, o_k, mk, H, DK)
        do = _tile(DO, rows, mr, i_h, o_v, mv, H, DV)
        c = tl.minimum(eos - start, BT).to(tl.float32)
        qd = (q * q_decay[:, None]).to(q.dtype)
        dstate += dstate * _expm1(a * c) + tl.dot(tl.trans(qd), do, input_precision=PREC)
    tl.store(_state_ptrs(DS0, i_n.to(tl.int64), i_h, o_k, o_v, H, DK, DV), dstate, mask=ms)


@triton.jit
def lightning_bwd_dqk_kernel(
    Q, K, V, DO, HS, DHS, DQ, DK_, LOG_DECAY, CU, BLOCKS, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DK, BK), blocks, H). With P = (dO V^T) * M, S entering and dG leaving the block:
    dQ = P K + Lambda dO S^T,   dK = P^T Q + Gamma V dG^T."""
    i_k, i_b, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, eos = _block(CU, BLOCKS, i_b, T, BT, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    c = tl.minimum(eos - start, BT).to(tl.float32)
    rows, o_k = start + tl.arange(0, BT), i_k * BK + tl.arange(0, BK)
    mr, mk = rows < eos, o_k < DK
    dp = tl.zeros([BT, BT], dtype=tl.float32)
    dq = tl.zeros([BT, BK], dtype=tl.float32)
    dk = tl.zeros([BT, BK], dtype=tl.float32)
    for i_v in range(0, tl.cdiv(DV, BV)):
        o_v = i_v * BV + tl.arange(0, BV)
        mv = o_v < DV
        ms = mk[:, None] & mv[None, :]
        v = _tile(V, rows, mr, i_h, o_v, mv, H, DV)
        do = _tile(DO, rows, mr, i_h, o_v, mv, H, DV)
        s = tl.load(_state_ptrs(HS, i_b.to(tl.int64), i_h, o_k, o_v, H, DK, DV), mask=ms, other=0.0)
        ds = tl.load(_state_ptrs(DHS, i_b.to(tl.int64), i_h, o_k, o_v, H, DK, DV), mask=ms, other=0.0)
        dp += tl.dot(do, tl.trans(v), input_precision=PREC)
        dq += tl.dot(do, tl.trans(s), input_precision=PREC)
        dk += tl.dot(v, tl.trans(ds), input_precision=PREC)
    q = _tile(Q, rows, mr, i_h, o_k, mk, H, DK)
    k = _tile(K, rows, mr, i_h, o_k, mk, H, DK)
    dp = dp * m
    dq = dq * q_decay[:, None] + tl.dot(dp.to(k.dtype), k, input_precision=PREC)
    dk = dk * _k_decay(a, t, c)[:, None] + tl.dot(tl.trans(dp).to(q.dtype), q, input_precision=PREC)
    tl.store(_tile_ptrs(DQ, rows, i_h, o_k, H, DK), dq.to(DQ.dtype.element_ty), mask=mr[:, None] & mk[None, :])
    tl.store(_tile_ptrs(DK_, rows, i_h, o_k, H, DK), dk.to(DK_.dtype.element_ty), mask=mr[:, None] & mk[None, :])


@triton.jit
def lightning_bwd_dv_kernel(
    Q, K, DO, DHS, DV_, LOG_DECAY, CU, BLOCKS, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DV, BV), blocks, H). dV = ((K Q^T) * M^T) dO + Gamma K dG, dG leaving the block."""
    i_v, i_b, i_h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start, eos = _block(CU, BLOCKS, i_b, T, BT, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    c = tl.minimum(eos - start, BT).to(tl.float32)
    rows, o_v = start + tl.arange(0, BT), i_v * BV + tl.arange(0, BV)
    mr, mv = rows < eos, o_v < DV
    kq, dv = _over_dk(K, Q, DHS, i_b, rows, mr, i_h, o_v, mv, H, DK, DV, BT, BK, BV, PREC)  # kq is (s, t)
    do = _tile(DO, rows, mr, i_h, o_v, mv, H, DV)
    dv = dv * _k_decay(a, t, c)[:, None] + tl.dot((kq * tl.trans(m)).to(do.dtype), do, input_precision=PREC)
    tl.store(_tile_ptrs(DV_, rows, i_h, o_v, H, DV), dv.to(DV_.dtype.element_ty), mask=mr[:, None] & mv[None, :])
