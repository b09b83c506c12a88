"""Triton kernels of the Lightning Attention-2 block algorithm (see ../README.md for the math).

One program owns one (sequence, head, feature tile) and walks the sequence block by block, keeping
its tile of the state in float32 registers: the forward and dq kernels sweep forwards, the dk and dv
kernels sweep backwards with the state's gradient. Products take the input dtype (bf16/fp16 tensor
cores, or exact fp32 with PREC="ieee") and accumulate in float32; every decay factor is <= 1.

Tensors are (B*T, H, D) row-major; sequence n spans rows [bos, eos): n*T .. (n+1)*T, or the
cu_seqlens offsets when VARLEN. States are (N, H, DK, DV) float32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _bounds(CU, i_n, T, VARLEN: tl.constexpr):
    if VARLEN:
        bos = tl.load(CU + i_n).to(tl.int64)
        eos = tl.load(CU + i_n + 1).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    return bos, eos


@triton.jit
def _decays(a, BT: tl.constexpr):
    """t (BT,), lambda^(t+1) (BT,), and M[t, s] = lambda^(t-s) for t >= s else 0 (BT, BT)."""
    t = tl.arange(0, BT).to(tl.float32)
    q_decay = tl.exp(a * (t + 1.0))
    diff = t[:, None] - t[None, :]
    m = tl.where(diff >= 0, tl.exp(a * tl.maximum(diff, 0.0)), 0.0)
    return t, q_decay, m


@triton.jit
def _k_decay(a, t, c):
    """lambda^(c-1-t) inside a block of c real tokens, 0 on its padding."""
    return tl.where(t < c, tl.exp(a * tl.maximum(c - 1.0 - t, 0.0)), 0.0)


@triton.jit
def lightning_fwd_kernel(
    Q, K, V, O, S0, SN, LOG_DECAY, CU, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Grid (cdiv(DV, BV), N*H); BK covers all of DK."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _bounds(CU, i_n, T, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    s_off = i_nh.to(tl.int64) * DK * DV + o_k[:, None] * DV + o_v[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_S0:
        state += tl.load(S0 + s_off, mask=mk[:, None] & mv[None, :], other=0.0)
    for start in range(bos, eos, BT):
        rows = start + o_t
        mr = rows < eos
        qk_off = rows[:, None] * (H * DK) + i_h * DK + o_k[None, :]
        v_off = rows[:, None] * (H * DV) + i_h * DV + o_v[None, :]
        q = tl.load(Q + qk_off, mask=mr[:, None] & mk[None, :], other=0.0)
        k = tl.load(K + qk_off, mask=mr[:, None] & mk[None, :], other=0.0)
        v = tl.load(V + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        attn = tl.dot(q, tl.trans(k), input_precision=PREC) * m  # (BT, BT) exact in-block part
        o = tl.dot(attn.to(v.dtype), v, input_precision=PREC)
        o += tl.dot(q, state.to(q.dtype), input_precision=PREC) * q_decay[:, None]
        tl.store(O + v_off, o.to(O.dtype.element_ty), mask=mr[:, None] & mv[None, :])
        c = tl.minimum(eos - start, BT).to(tl.float32)
        kd = (k * _k_decay(a, t, c)[:, None]).to(k.dtype)
        state = state * tl.exp(a * c) + tl.dot(tl.trans(kd), v, input_precision=PREC)
    tl.store(SN + s_off, state, mask=mk[:, None] & mv[None, :])


@triton.jit
def lightning_bwd_dq_kernel(
    K, V, DO, DQ, S0, LOG_DECAY, CU, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_S0: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Forward sweep. Grid (cdiv(DK, BK), N*H); BV covers all of DV.
    dQ = ((dO V^T) * M) K + Lambda dO S^T, with S the state before the block."""
    i_k, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _bounds(CU, i_n, T, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    o_t, o_k, o_v = tl.arange(0, BT), i_k * BK + tl.arange(0, BK), tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_S0:
        s_off = i_nh.to(tl.int64) * DK * DV + o_k[:, None] * DV + o_v[None, :]
        state += tl.load(S0 + s_off, mask=mk[:, None] & mv[None, :], other=0.0)
    for start in range(bos, eos, BT):
        rows = start + o_t
        mr = rows < eos
        k_off = rows[:, None] * (H * DK) + i_h * DK + o_k[None, :]
        v_off = rows[:, None] * (H * DV) + i_h * DV + o_v[None, :]
        k = tl.load(K + k_off, mask=mr[:, None] & mk[None, :], other=0.0)
        v = tl.load(V + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        do = tl.load(DO + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=PREC) * m
        dq = tl.dot(dp.to(k.dtype), k, input_precision=PREC)
        dq += tl.dot(do, tl.trans(state).to(do.dtype), input_precision=PREC) * q_decay[:, None]
        tl.store(DQ + k_off, dq.to(DQ.dtype.element_ty), mask=mr[:, None] & mk[None, :])
        c = tl.minimum(eos - start, BT).to(tl.float32)
        kd = (k * _k_decay(a, t, c)[:, None]).to(k.dtype)
        state = state * tl.exp(a * c) + tl.dot(tl.trans(kd), v, input_precision=PREC)


@triton.jit
def lightning_bwd_dk_kernel(
    Q, V, DO, DK_, DSN, DS0, LOG_DECAY, CU, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSN: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Reverse sweep. Grid (cdiv(DK, BK), N*H); BV covers all of DV. dS is the gradient of the state
    after the block: dK = ((V dO^T) * M^T) Q + Gamma V dS^T, then dS = lambda^c dS + (Lambda Q)^T dO."""
    i_k, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _bounds(CU, i_n, T, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    o_t, o_k, o_v = tl.arange(0, BT), i_k * BK + tl.arange(0, BK), tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    s_off = i_nh.to(tl.int64) * DK * DV + o_k[:, None] * DV + o_v[None, :]
    dstate = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DSN:
        dstate += tl.load(DSN + s_off, mask=mk[:, None] & mv[None, :], other=0.0)
    n_blocks = tl.cdiv(eos - bos, BT)
    for i in range(0, n_blocks):
        start = bos + (n_blocks - 1 - i) * BT
        rows = start + o_t
        mr = rows < eos
        k_off = rows[:, None] * (H * DK) + i_h * DK + o_k[None, :]
        v_off = rows[:, None] * (H * DV) + i_h * DV + o_v[None, :]
        q = tl.load(Q + k_off, mask=mr[:, None] & mk[None, :], other=0.0)
        v = tl.load(V + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        do = tl.load(DO + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        c = tl.minimum(eos - start, BT).to(tl.float32)
        dpt = tl.dot(v, tl.trans(do), input_precision=PREC) * tl.trans(m)  # (s, t)
        dk = tl.dot(dpt.to(q.dtype), q, input_precision=PREC)
        dk += tl.dot(v, tl.trans(dstate).to(v.dtype), input_precision=PREC) * _k_decay(a, t, c)[:, None]
        tl.store(DK_ + k_off, dk.to(DK_.dtype.element_ty), mask=mr[:, None] & mk[None, :])
        qd = (q * q_decay[:, None]).to(q.dtype)
        dstate = dstate * tl.exp(a * c) + tl.dot(tl.trans(qd), do, input_precision=PREC)
    tl.store(DS0 + s_off, dstate, mask=mk[:, None] & mv[None, :])


@triton.jit
def lightning_bwd_dv_kernel(
    Q, K, DO, DV_, DSN, LOG_DECAY, CU, T,
    H: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    HAS_DSN: tl.constexpr, VARLEN: tl.constexpr, PREC: tl.constexpr,
):
    """Reverse sweep. Grid (cdiv(DV, BV), N*H); BK covers all of DK.
    dV = ((K Q^T) * M^T) dO + Gamma K dS."""
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_h = i_nh // H, i_nh % H
    bos, eos = _bounds(CU, i_n, T, VARLEN)
    a = tl.load(LOG_DECAY + i_h).to(tl.float32)
    t, q_decay, m = _decays(a, BT)
    o_t, o_k, o_v = tl.arange(0, BT), tl.arange(0, BK), i_v * BV + tl.arange(0, BV)
    mk, mv = o_k < DK, o_v < DV
    dstate = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DSN:
        s_off = i_nh.to(tl.int64) * DK * DV + o_k[:, None] * DV + o_v[None, :]
        dstate += tl.load(DSN + s_off, mask=mk[:, None] & mv[None, :], other=0.0)
    n_blocks = tl.cdiv(eos - bos, BT)
    for i in range(0, n_blocks):
        start = bos + (n_blocks - 1 - i) * BT
        rows = start + o_t
        mr = rows < eos
        k_off = rows[:, None] * (H * DK) + i_h * DK + o_k[None, :]
        v_off = rows[:, None] * (H * DV) + i_h * DV + o_v[None, :]
        q = tl.load(Q + k_off, mask=mr[:, None] & mk[None, :], other=0.0)
        k = tl.load(K + k_off, mask=mr[:, None] & mk[None, :], other=0.0)
        do = tl.load(DO + v_off, mask=mr[:, None] & mv[None, :], other=0.0)
        c = tl.minimum(eos - start, BT).to(tl.float32)
        at = tl.dot(k, tl.trans(q), input_precision=PREC) * tl.trans(m)  # (s, t)
        dv = tl.dot(at.to(do.dtype), do, input_precision=PREC)
        dv += tl.dot(k, dstate.to(k.dtype), input_precision=PREC) * _k_decay(a, t, c)[:, None]
        tl.store(DV_ + v_off, dv.to(DV_.dtype.element_ty), mask=mr[:, None] & mv[None, :])
        qd = (q * q_decay[:, None]).to(q.dtype)
        dstate = dstate * tl.exp(a * c) + tl.dot(tl.trans(qd), do, input_precision=PREC)
