"""Parameter-free and weighted RMS norms, computed in float32 and cast back."""

from __future__ import annotations

import torch


def srms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SRMSNorm (TransNormerLLM): x / sqrt(mean(x^2, -1) + eps); no weight."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm (LLaMA): weight * x / sqrt(mean(x^2, -1) + eps), normalised in float32."""
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * y
