"""RNN-mode decayed linear attention (TransNormerLLM's robust inference form).

    S_t = lambda * S_(t-1) + k_t^T v_t       # float32 state (B, H, Dk, Dv)
    o_t = q_t S_t

Only factors <= 1 appear, so the state stays finite for any length, and each token costs
O(Dk * Dv) whatever its position. Used for decoding a few tokens after a prefill.
"""

from __future__ import annotations

import torch


def recurrent_lightning_attn(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    log_decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q, k: (B, T, H, Dk); v: (B, T, H, Dv); log_decay: (H,); state (B, H, Dk, Dv) float32."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    state = (
        initial_state.float()
        if initial_state is not None
        else q.new_zeros(B, H, Dk, Dv, dtype=torch.float32)
    )
    lam = torch.exp(log_decay.float()).view(1, H, 1, 1)
    out = []
    for t in range(T):
        kt, vt, qt = k[:, t].float(), v[:, t].float(), q[:, t].float()  # (B, H, D)
        state = lam * state + kt.unsqueeze(-1) * vt.unsqueeze(-2)
        out.append(torch.einsum("bhk,bhkv->bhv", qt, state))
    o = torch.stack(out, dim=1).to(q.dtype) if T else v.new_zeros(B, 0, H, Dv)
    return o, (state if output_final_state else None)
