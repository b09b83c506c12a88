"""Infini-attention (Munkhdalai et al. 2024): causal softmax attention inside a segment, plus a per-head
compressive memory of all earlier segments, mixed by a learned per-head gate.

    sigma(x) = ELU(x) + 1
    read:    A_mem = sigma(Q) M / (sigma(Q) z)
    linear:  M += sigma(K)^T V,                                  z += sum_t sigma(K_t)
    delta:   M += sigma(K)^T (V - sigma(K) M / (sigma(K) z)),    z += sum_t sigma(K_t)
    out:     sigmoid(beta_h) A_mem + (1 - sigmoid(beta_h)) A_local

A segment's update reads the memory from before the segment. No positions on the memory path (q, k
before RoPE); the local path gets rotated q, k. Memory is float32: it sums thousands of outer products.

Segments are given per token as indices relative to the memory passed in (0 = the first segment the
memory has not absorbed, -1 = padding), so sequences of one batch may cross segment boundaries at
different tokens (left padding, decoding). `infini_attention` is the fast path (batched einsums, one
SDPA call); `infini_attention_reference` loops over segments, tokens and heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tnlm.errors import InputError
from tnlm.ops.softmax import softmax_attention, softmax_attention_reference

Memory = tuple[torch.Tensor, torch.Tensor]  # M (B, Hkv, Dk, Dv), z (B, Hkv, Dk), float32
MEMORY_RULES = ("linear", "delta")
EPS = 1e-6  # 0 / eps = 0 for an empty memory (z = 0)


def elu_feature(x: torch.Tensor) -> torch.Tensor:
    """sigma(x) = ELU(x) + 1 > 0."""
    return F.elu(x) + 1.0


def empty_memory(batch: int, heads: int, dk: int, dv: int, *, device: torch.device | str = "cpu") -> Memory:
    zeros = torch.zeros
    return zeros(batch, heads, dk, dv, device=device), zeros(batch, heads, dk, device=device)


def memory_retrieve(sq: torch.Tensor, memory: Memory) -> torch.Tensor:
    """sq = sigma(q) (B, T, H, Dk), H a multiple of the memory's Hkv heads -> (B, T, H, Dv) float32."""
    M, z = memory
    B, T, H, Dk = sq.shape
    s = sq.float().reshape(B, T, M.shape[1], H // M.shape[1], Dk)  # (B, T, Hkv, G, Dk)
    num = torch.einsum("btkgd,bkde->btkge", s, M)
    den = torch.einsum("btkgd,bkd->btkg", s, z)
    return (num / (den[..., None] + EPS)).reshape(B, T, H, -1)


def memory_update(sk: torch.Tensor, v: torch.Tensor, memory: Memory, *, rule: str = "linear") -> Memory:
    """Absorb one segment: sk = sigma(k) (B, T, Hkv, Dk) with zero rows for tokens outside the segment,
    v (B, T, Hkv, Dv). Returns the new (M, z)."""
    if rule not in MEMORY_RULES:
        raise InputError(f"unknown memory rule {rule!r}; choose one of {MEMORY_RULES}")
    M, z = memory
    skf, vf = sk.float(), v.float()
    if rule == "delta":
        vf = vf - memory_retrieve(skf, memory)  # store only what the memory does not already return
    return M + torch.einsum("btkd,btke->bkde", skf, vf), z + skf.sum(1)


def segment_memories(
    sk: torch.Tensor,
    v: torch.Tensor,
    *,
    k_seg: torch.Tensor,
    memory: Memory,
    count: int,
    rule: str,
    detach: bool = False,
) -> list[Memory]:
    """memories[r] = `memory` after absorbing relative segments 0..r-1, r = 0..count.
    sk, v (B, Tk, Hkv, D); k_seg (B, Tk) relative segment of each key (-1 = none)."""
    memories = [memory]
    for r in range(count):
        in_seg = (k_seg == r)[:, :, None, None]
        mem = memory_update(sk * in_seg, v, memories[-1], rule=rule)
        memories.append((mem[0].detach(), mem[1].detach()) if detach else mem)
    return memories


def retrieve_segments(sq: torch.Tensor, *, q_seg: torch.Tensor, memories: list[Memory]) -> torch.Tensor:
    """Each query reads the memory of its own segment: (B, T, H, Dv); padded queries (-1) read 0."""
    out = torch.zeros(*sq.shape[:3], memories[0][0].shape[-1], device=sq.device)
    for r, mem in enumerate(memories):
        if bool((q_seg == r).any()):
            out = out + memory_retrieve(sq * (q_seg == r)[:, :, None, None], mem)
    return out


def pick_memory(memories: list[Memory], index: torch.Tensor) -> Memory:
    """Per sequence b, memories[index[b]]: (M, z) of shape (B, ...)."""
    M = torch.stack([m[0] for m in memories])  # (R + 1, B, Hkv, Dk, Dv)
    z = torch.stack([m[1] for m in memories])
    b = torch.arange(index.shape[0], device=index.device)
    return M[index, b], z[index, b]


def infini_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    q_seg: torch.Tensor,
    k_seg: torch.Tensor,
    gate: torch.Tensor,
    memory: Memory,
    count: int,
    rule: str = "linear",
    detach: bool = False,
    alibi_slopes: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[Memory]]:
    """q, q_rot (B, T, H, D) the new tokens, without and with positions; k, k_rot, v (B, Tk, Hkv, D)
    all keys, the queries' own last; q_seg (B, T), k_seg (B, Tk) relative segments; gate (H,) logits
    beta; memory: what earlier segments left; count: segments that complete here (memories[count]
    exists). Returns out (B, T, H, D) and memories[0..count].

    >>> q, k = torch.randn(1, 6, 2, 4), torch.randn(1, 6, 1, 4)
    >>> seg = torch.arange(6)[None] // 4
    >>> out, mems = infini_attention(q, k, k, q_rot=q, k_rot=k, q_seg=seg, k_seg=seg, gate=torch.zeros(2),
    ...                              memory=empty_memory(1, 1, 4, 4), count=1)
    >>> out.shape, len(mems)
    (torch.Size([1, 6, 2, 4]), 2)
    """
    same_segment = (q_seg[:, :, None] == k_seg[:, None, :]) & (q_seg >= 0)[:, :, None]  # (B, T, Tk)
    local = softmax_attention(q_rot, k_rot, v, mask=same_segment, alibi_slopes=alibi_slopes)
    memories = segment_memories(elu_feature(k), v, k_seg=k_seg, memory=memory, count=count, rule=rule, detach=detach)
    read = retrieve_segments(elu_feature(q), q_seg=q_seg, memories=memories)
    g = torch.sigmoid(gate.float())[:, None]  # (H, 1): one scalar per head
    return (g * read + (1 - g) * local.float()).to(q.dtype), memories


def memory_retrieve_reference(sq: torch.Tensor, memory: Memory) -> torch.Tensor:
    """One query, one head at a time, float64."""
    M, z = (t.double() for t in memory)
    B, T, H, _ = sq.shape
    group = H // M.shape[1]
    rows = [
        [[(sq[b, t, h].double() @ M[b, h // group]) / (sq[b, t, h].double() @ z[b, h // group] + EPS) for h in range(H)]
         for t in range(T)]
        for b in range(B)
    ]  # fmt: skip
    return torch.stack([torch.stack([torch.stack(r) for r in row]) for row in rows])


def memory_update_reference(sk: torch.Tensor, v: torch.Tensor, memory: Memory, *, rule: str = "linear") -> Memory:
    """One token, one head at a time, float64; every token of the segment reads the old memory."""
    M0, z0 = (t.double() for t in memory)
    B, T, Hkv, _ = sk.shape
    Ms, zs = [], []
    for b in range(B):
        Mb, zb = [], []
        for h in range(Hkv):
            M, z = M0[b, h], z0[b, h]
            for t in range(T):
                s, target = sk[b, t, h].double(), v[b, t, h].double()
                if rule == "delta":
                    target = target - (s @ M0[b, h]) / (s @ z0[b, h] + EPS)
                M, z = M + torch.outer(s, target), z + s
            Mb.append(M)
            zb.append(z)
        Ms.append(torch.stack(Mb))
        zs.append(torch.stack(zb))
    return torch.stack(Ms), torch.stack(zs)


def infini_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    q_rot: torch.Tensor,
    k_rot: torch.Tensor,
    segment_length: int,
    gate: torch.Tensor,
    rule: str = "linear",
) -> tuple[torch.Tensor, Memory]:
    """Whole unpadded sequences from position 0, segment by segment. Returns out and the memory after
    the last complete segment."""
    B, T, H, D = q.shape
    memory = tuple(t.double() for t in empty_memory(B, k.shape[2], D, v.shape[-1], device=q.device))
    g = torch.sigmoid(gate.double())[:, None]
    outs = []
    for start in range(0, T, segment_length):
        seg = slice(start, start + segment_length)
        local = softmax_attention_reference(q_rot[:, seg], k_rot[:, seg], v[:, seg]).double()
        read = memory_retrieve_reference(elu_feature(q[:, seg]), memory)
        outs.append(g * read + (1 - g) * local)
        if start + segment_length <= T:
            memory = memory_update_reference(elu_feature(k[:, seg]), v[:, seg], memory, rule=rule)
    return torch.cat(outs, dim=1).to(q.dtype), memory
