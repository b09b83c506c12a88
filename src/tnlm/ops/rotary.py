"""Rotary position embedding (RoPE): frequencies with theta and linear / NTK / llama3 scaling, and its
application in the "rotate half" layout (the pair of channel j is channel j + D/2, as in HF Llama).

`apply_rotary` is the fast path; `apply_rotary_reference` rotates complex numbers, one pair at a time.
"""

from __future__ import annotations

import math

import torch

from tnlm.errors import InputError

ROPE_TYPES = ("default", "linear", "ntk", "llama3")


def _llama3_scale(
    inv_freq: torch.Tensor, *, factor: float, low_freq_factor: float, high_freq_factor: float, original_max_len: int
) -> torch.Tensor:
    """Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between."""
    wavelen = 2 * math.pi / inv_freq
    ramp = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - ramp) * inv_freq / factor + ramp * inv_freq
    out = torch.where(wavelen > original_max_len / low_freq_factor, inv_freq / factor, smoothed)
    return torch.where(wavelen < original_max_len / high_freq_factor, inv_freq, out)


def rope_inv_freq(
    head_dim: int,
    *,
    theta: float = 10000.0,
    rope_type: str = "default",
    factor: float = 1.0,
    low_freq_factor: float = 1.0,
    high_freq_factor: float = 4.0,
    original_max_len: int = 8192,
) -> torch.Tensor:
    """Inverse frequencies, (head_dim / 2,) float32.

    default: theta^(-2j / D); linear: divided by `factor` (positions interpolated);
    ntk: theta * factor^(D / (D - 2)) as the base (static NTK-aware scaling);
    llama3: per-wavelength interpolation of Llama 3.1.

    >>> rope_inv_freq(4, theta=100.0)
    tensor([1.0000, 0.1000])
    """
    if head_dim % 2:
        raise InputError(f"RoPE needs an even head_dim, got {head_dim}")
    if rope_type not in ROPE_TYPES:
        raise InputError(f"unknown rope_type {rope_type!r}; choose one of {ROPE_TYPES}")
    base = theta * factor ** (head_dim / (head_dim - 2)) if rope_type == "ntk" else theta
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    if rope_type == "linear":
        inv_freq = inv_freq / factor
    elif rope_type == "llama3":
        inv_freq = _llama3_scale(
            inv_freq, factor=factor, low_freq_factor=low_freq_factor,
            high_freq_factor=high_freq_factor, original_max_len=original_max_len,
        )  # fmt: skip
    return inv_freq


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (B, T) integer -> cos, sin (B, T, D/2) float32 (angles reach 1e5 rad: float32 at least)."""
    angle = positions.float()[..., None] * inv_freq.to(positions.device, torch.float32)
    return angle.cos(), angle.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, D); cos, sin (B, T, D/2). Rotates the pair (x_j, x_{j + D/2}) by angle_j."""
    x1, x2 = x.float().chunk(2, dim=-1)  # (B, T, H, D/2) each
    c, s = cos[:, :, None, :], sin[:, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)


def apply_rotary_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Slow reference: the pair as a complex number times e^{i angle}."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    rot = torch.complex(cos.double(), sin.double())[:, :, None, :]
    zr = z * rot
    return torch.cat([zr.real, zr.imag], dim=-1).to(x.dtype)
