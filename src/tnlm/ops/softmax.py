"""Causal softmax attention with grouped-query heads (MHA / GQA / MQA) and an optional ALiBi bias.

`softmax_attention` runs PyTorch's `scaled_dot_product_attention` (FlashAttention / memory-efficient
kernels where the inputs allow); `softmax_attention_reference` builds the score matrix explicitly,
repeats K/V heads and adds an explicit bias matrix, in float64.

Queries are the last Tq of the Tk key positions (earlier keys come from a cache), so query i sits at
key position i + Tk - Tq and sees keys j <= that position.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tnlm.errors import InputError


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> None:
    (B, Tq, H, D), (Bk, Tk, Hkv, Dk) = q.shape, k.shape
    if k.shape != v.shape[:-1] + (Dk,) or v.shape[:3] != k.shape[:3] or Bk != B or Dk != D:
        raise InputError(f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} do not fit (B, T, H, D)")
    if H % Hkv:
        raise InputError(f"{H} query heads cannot share {Hkv} key/value heads: H must be a multiple of Hkv")
    if Tq > Tk:
        raise InputError(f"{Tq} queries but only {Tk} keys: the queries' own keys must be included")
    if mask is not None and mask.shape != (B, Tq, Tk):
        raise InputError(f"mask has shape {tuple(mask.shape)}, expected {(B, Tq, Tk)}")


def causal_mask(tq: int, tk: int, *, device: torch.device) -> torch.Tensor:
    """(Tq, Tk) bool, True where query i may see key j: j <= i + Tk - Tq."""
    return torch.ones(tq, tk, dtype=torch.bool, device=device).tril(tk - tq)


def alibi_bias(slopes: torch.Tensor, tq: int, tk: int) -> torch.Tensor:
    """(H, Tq, Tk) float32: -slope_h * (distance from query to key)."""
    q_pos = torch.arange(tk - tq, tk, device=slopes.device)
    dist = (q_pos[:, None] - torch.arange(tk, device=slopes.device)[None, :]).float()  # (Tq, Tk)
    return -slopes.float()[:, None, None] * dist


def _allowed(mask: torch.Tensor | None, tq: int, tk: int, device: torch.device) -> torch.Tensor:
    """(B or 1, Tq, Tk): causal AND mask; a query's own key is always allowed, so a padded query
    (all keys masked) still gets a finite, ignored output instead of NaN."""
    causal = causal_mask(tq, tk, device=device)
    if mask is None:
        return causal[None]
    own = torch.zeros(tq, tk, dtype=torch.bool, device=device)
    own[torch.arange(tq), torch.arange(tk - tq, tk)] = True
    return (causal & mask) | own


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal attention. q (B, Tq, H, D); k, v (B, Tk, Hkv, D) with H a multiple of Hkv;
    mask (B, Tq, Tk) bool, True = may attend (padding, segments), combined with causality;
    alibi_slopes (H,). Returns (B, Tq, H, D).

    >>> q, k = torch.randn(1, 3, 4, 8), torch.randn(1, 5, 2, 8)
    >>> softmax_attention(q, k, k).shape
    torch.Size([1, 3, 4, 8])
    """
    _check(q, k, v, mask)
    Tq, H, Tk, Hkv = q.shape[1], q.shape[2], k.shape[1], k.shape[2]
    qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    gqa = H != Hkv
    if mask is None and alibi_slopes is None and (Tq == Tk or Tq == 1):
        o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=Tq == Tk and Tq > 1, scale=scale, enable_gqa=gqa)
        return o.transpose(1, 2)
    allowed = _allowed(mask, Tq, Tk, q.device)[:, None]  # (B or 1, 1, Tq, Tk)
    if alibi_slopes is None:
        attn_mask = allowed
    else:
        bias = alibi_bias(alibi_slopes.to(q.device), Tq, Tk)[None].to(q.dtype)  # (1, H, Tq, Tk)
        attn_mask = bias.masked_fill(~allowed, float("-inf"))
    o = F.scaled_dot_product_attention(qt, kt, vt, attn_mask=attn_mask, scale=scale, enable_gqa=gqa)
    return o.transpose(1, 2)


def softmax_attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    alibi_slopes: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Slow reference of `softmax_attention`: K/V heads repeated, explicit bias matrix, float64."""
    _check(q, k, v, mask)
    B, Tq, H, D = q.shape
    Tk, Hkv = k.shape[1], k.shape[2]
    group = H // Hkv
    kr = k.double().repeat_interleave(group, dim=2)  # (B, Tk, H, D): query head h uses kv head h // group
    vr = v.double().repeat_interleave(group, dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q.double(), kr) * (D**-0.5 if scale is None else scale)
    i = torch.arange(Tq, device=q.device)[:, None] + (Tk - Tq)  # (Tq, 1) each query's own key position
    j = torch.arange(Tk, device=q.device)[None, :]  # (1, Tk)
    if alibi_slopes is not None:
        scores = scores - alibi_slopes.double()[:, None, None] * (i - j).double()  # bias[h, i, j] = -m_h (i - j)
    allowed = j <= i
    if mask is not None:
        allowed = allowed & mask  # (B, Tq, Tk)
    allowed = allowed | (j == i)  # a padded query sees itself: finite output, ignored
    scores = scores.masked_fill(~allowed.reshape(-1, 1, Tq, Tk), float("-inf"))
    out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), vr)
    return out.to(q.dtype)
