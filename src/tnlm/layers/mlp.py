"""Gated channel mixers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tnlm.layers.activations import feature_map


class SGLU(nn.Module):
    """Simple GLU of TransNormerLLM: l3(l1(x) * l2(x)), no activation. With `act` (a name from
    tnlm.layers.activations), l3(act(l1(x)) * l2(x)): the GLU that SGLU simplified (the paper's ablation)."""

    def __init__(self, dim: int, inner_dim: int, *, bias: bool = False, act: str = "none") -> None:
        super().__init__()
        self.l1 = nn.Linear(dim, inner_dim, bias=bias)
        self.l2 = nn.Linear(dim, inner_dim, bias=bias)
        self.l3 = nn.Linear(inner_dim, dim, bias=bias)
        self.act = None if act == "none" else feature_map(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.l1(x) if self.act is None else self.act(self.l1(x))
        return self.l3(gate * self.l2(x))


class SwiGLU(nn.Module):
    """SwiGLU of LLaMA: down(silu(gate(x)) * up(x)); names as in Hugging Face Llama."""

    def __init__(self, dim: int, inner_dim: int, *, bias: bool = False) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, inner_dim, bias=bias)
        self.up_proj = nn.Linear(dim, inner_dim, bias=bias)
        self.down_proj = nn.Linear(inner_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
