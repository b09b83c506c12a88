"""Reference decayed linear attention: the O(T^2) quadratic form, obviously correct, slow.

    o_t = sum_{s <= t} lambda^(t-s) (q_t . k_s) v_s  +  lambda^(t+1) q_t S_0
    S_T = lambda^T S_0 + sum_s lambda^(T-1-s) k_s^T v_s

Every fast path in this package is tested against this function.
"""

from __future__ import annotations

import torch


def naive_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k: (B, T, H, Dk); v: (B, T, H, Dv); log_decay: (H,) <= 0; state: (B, H, Dk, Dv) float32."""
    dtype = q.dtype
    q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))  # (B, H, T, D)
    T = q.shape[2]
    pos = torch.arange(T, device=q.device, dtype=torch.float32)
    lam = log_decay.float().view(-1, 1, 1)
    rel = pos.view(-1, 1) - pos.view(1, -1)  # (T, T): t - s
    mask = torch.where(rel >= 0, torch.exp(lam * rel.clamp(min=0)), torch.zeros((), device=q.device))
    o = ((q @ k.transpose(-1, -2)) * mask) @ v  # (B, H, T, Dv)
    if initial_state is not None:
        o = o + torch.exp(lam * (pos.view(-1, 1) + 1)) * (q @ initial_state.float())
    final_state = None
    if output_final_state:
        w = torch.exp(lam * (T - 1 - pos.view(-1, 1)))  # (H, T, 1)
        final_state = (k * w).transpose(-1, -2) @ v  # (B, H, Dk, Dv)
        if initial_state is not None:
            final_state = final_state + torch.exp(lam * T) * initial_state.float()
    return o.transpose(1, 2).to(dtype), final_state
