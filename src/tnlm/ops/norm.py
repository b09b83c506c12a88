"""Parameter-free and weighted RMS norms, computed in float32 and cast back.

`srms_norm` runs fused Triton kernels (ops/norm_triton.py) on CUDA tensors when Triton is installed,
and this PyTorch code everywhere else; both compute the same thing (tests/ops compare them).
"""

from __future__ import annotations

import importlib.util

import torch

_HAS_TRITON = importlib.util.find_spec("triton") is not None


def srms_norm_reference(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SRMSNorm in PyTorch: x / sqrt(mean(x^2, -1) + eps), in float32, cast back; no weight."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def srms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SRMSNorm (TransNormerLLM): x / sqrt(mean(x^2, -1) + eps); no weight.

    >>> srms_norm(torch.tensor([[3.0, 4.0]])).mul(12.5 ** 0.5).round(decimals=4)
    tensor([[3., 4.]])
    """
    if x.is_cuda and _HAS_TRITON and x.shape[-1] <= 65536:
        from tnlm.ops.norm_triton import triton_srms_norm

        return triton_srms_norm(x, eps)
    return srms_norm_reference(x, eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm (LLaMA): weight * x / sqrt(mean(x^2, -1) + eps), normalised in float32."""
    xf = x.float()
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return weight * y
