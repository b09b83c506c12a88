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
    """q, k: (B, T, H, Dk); v: (B, T, H, Dv); log_decay: (H,); state (B, H, Dk, Dv) float32.

    Returns (o (B, T, H, Dv) in q's dtype, final state or None). The caller's `initial_state` is
    never modified. Differentiable (autograd through the loop), though it is meant for decoding.

    >>> q = k = torch.randn(1, 3, 2, 4); v = torch.randn(1, 3, 2, 5)
    >>> o, s = recurrent_lightning_attn(q, k, v, torch.tensor([-0.5, -0.01]), output_final_state=True)
    >>> o.shape, s.shape, s.dtype
    (torch.Size([1, 3, 2, 5]), torch.Size([1, 2, 4, 5]), torch.float32)
    """
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    state = (
        initial_state.float()
        if initial_state is not None
        else q.new_zeros(B, H, Dk, Dv, dtype=torch.float32)
    )
    # lambda - 1 rather than lambda: for the slowest heads (slope ~4e-8) float32 would round lambda
    # itself to 1 - 6e-8, a bias that compounds over tens of thousands of steps
    lam_m1 = torch.expm1(log_decay.float()).view(1, H, 1, 1)
    qf, kf, vf = q.float(), k.float(), v.float()
    out = []
    for t in range(T):
        # only factors <= 1 touch the state: it stays finite at any position
        state = torch.addcmul(state, state, lam_m1).addcmul_(kf[:, t].unsqueeze(-1), vf[:, t].unsqueeze(-2))
        out.append((qf[:, t].unsqueeze(-2) @ state).squeeze(-2))  # (B, H, Dv)
    o = torch.stack(out, dim=1).to(q.dtype) if T else v.new_zeros(B, 0, H, Dv, dtype=q.dtype)
    return o, (state if output_final_state else None)
