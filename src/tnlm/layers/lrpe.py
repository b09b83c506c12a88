"""LRPE: linearised relative positional encoding (TransNormerLLM, layer 0 of the released models)."""

from __future__ import annotations

import torch
from torch import nn

from tnlm.layers.sharding import local_shard


def lrpe_init_theta(num_heads: int, head_dim: int) -> torch.Tensor:
    """Initial theta, (H, 1, hd): 10000^(-2 j / d_tot) for j = 0..d_tot-1, spread across heads."""
    d_tot = num_heads * head_dim
    theta = 10000.0 ** (-2.0 / d_tot * torch.arange(d_tot, dtype=torch.float64))
    return theta.reshape(num_heads, 1, head_dim).float()


class Lrpe(nn.Module):
    """lrpe(x)_p = [x cos(theta p), x sin(theta p)]: the feature dim doubles, and
    lrpe(q)_s . lrpe(k)_t = sum_j q_j k_j cos(theta_j (s - t)) depends on s - t only.

    theta has the official shape (H, 1, hd) so released checkpoints load unchanged.
    """

    def __init__(self, num_heads: int, head_dim: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, head_dim
        self.theta = nn.Parameter(lrpe_init_theta(num_heads, head_dim))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.theta.copy_(lrpe_init_theta(self.num_heads, self.head_dim))

    def forward(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H, hd); positions: (B, T) or (T,) absolute indices -> (B, T, H, 2 hd)."""
        return self._encode(x, *self._cos_sin(positions))

    def pair(self, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(forward(q, positions), forward(k, positions)) with the angles' cos and sin computed once."""
        cos, sin = self._cos_sin(positions)
        return self._encode(q, cos, sin), self._encode(k, cos, sin)

    def _cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of theta p, each (B, T, H, hd) float32."""
        if positions.dim() == 1:
            positions = positions.unsqueeze(0)
        # float32: angles reach theta * p with p in the tens of thousands
        angle = positions.float()[:, :, None, None] * local_shard(self.theta).float().squeeze(1)  # (B, T, H, hd)
        return torch.cos(angle), torch.sin(angle)

    @staticmethod
    def _encode(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return torch.cat([xf * cos, xf * sin], dim=-1).to(x.dtype)
