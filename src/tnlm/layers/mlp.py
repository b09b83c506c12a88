"""Gated channel mixers."""

from __future__ import annotations

import torch
from torch import nn


class SGLU(nn.Module):
    """Simple GLU of TransNormerLLM: l3(l1(x) * l2(x)), no activation."""

    def __init__(self, dim: int, inner_dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.l1 = nn.Linear(dim, inner_dim, bias=bias)
        self.l2 = nn.Linear(dim, inner_dim, bias=bias)
        self.l3 = nn.Linear(inner_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l3(self.l1(x) * self.l2(x))
