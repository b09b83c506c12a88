"""Position modules for softmax attention: rotary embedding (RoPE) and ALiBi slopes.

Neither has learnable state, so neither appears in the state dict; their tables are computed per device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tnlm.layers.decay import alibi_slopes
from tnlm.ops.rotary import apply_rotary, rope_cos_sin, rope_inv_freq


@dataclass(frozen=True)
class RopeSpec:
    """RoPE frequencies: theta and a scaling scheme ("default", "linear", "ntk", "llama3")."""

    theta: float = 10000.0
    rope_type: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_len: int = 8192


class Rotary(nn.Module):
    """Rotates q or k (B, T, H, D) by the angles of their absolute positions (B, T)."""

    def __init__(self, head_dim: int, spec: RopeSpec) -> None:
        super().__init__()
        self.head_dim, self.spec = head_dim, spec
        self._inv_freq: dict[torch.device, torch.Tensor] = {}

    def inv_freq(self, device: torch.device) -> torch.Tensor:
        if device not in self._inv_freq:
            s = self.spec
            inv = rope_inv_freq(
                self.head_dim, theta=s.theta, rope_type=s.rope_type, factor=s.factor,
                low_freq_factor=s.low_freq_factor, high_freq_factor=s.high_freq_factor,
                original_max_len=s.original_max_len,
            )  # fmt: skip
            self._inv_freq[device] = inv.to(device)
        return self._inv_freq[device]

    def cos_sin(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions (B, T) -> cos, sin (B, T, D/2); compute once, rotate q and k with them."""
        return rope_cos_sin(positions, self.inv_freq(positions.device))

    def forward(self, x: torch.Tensor, cos_sin: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return apply_rotary(x, *cos_sin)


class Alibi(nn.Module):
    """The standard ALiBi slopes (H,) of the ALiBi paper / Baichuan-13B, as a module for symmetry."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self._slopes: dict[torch.device, torch.Tensor] = {}

    def slopes(self, device: torch.device) -> torch.Tensor:
        if device not in self._slopes:
            self._slopes[device] = alibi_slopes(self.num_heads).float().to(device)
        return self._slopes[device]
