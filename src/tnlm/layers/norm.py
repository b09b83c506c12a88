"""Normalisation modules. The maths lives in tnlm.ops.norm."""

from __future__ import annotations

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.ops.norm import rms_norm, srms_norm


class SRMSNorm(nn.Module):
    """Simple RMSNorm: x / sqrt(mean(x^2) + eps), no learnable weight, computed in float32."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return srms_norm(x, self.eps)


class RMSNorm(nn.Module):
    """RMSNorm (LLaMA): weight * x / sqrt(mean(x^2) + eps), normalised in float32."""

    def __init__(self, dim: int, *, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


# TransNormerLLM's norm choice. The official code turns any name but "simplermsnorm" into LayerNorm;
# tnlm refuses an unknown name instead, so a typo cannot silently change the model, and adds
# "rmsnorm" for the paper's normalisation ablation.
NORM_TYPES = ("simplermsnorm", "layernorm", "rmsnorm")


def build_norm(norm_type: str, dim: int) -> nn.Module:
    """"simplermsnorm" -> SRMSNorm (no weight); "layernorm" -> nn.LayerNorm(dim); "rmsnorm" -> RMSNorm(dim)."""
    if norm_type not in NORM_TYPES:
        raise ConfigError(f"norm_type {norm_type!r} is unknown; choose one of {', '.join(NORM_TYPES)}")
    if norm_type == "simplermsnorm":
        return SRMSNorm()
    return nn.LayerNorm(dim) if norm_type == "layernorm" else RMSNorm(dim)
