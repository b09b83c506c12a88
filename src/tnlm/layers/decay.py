"""Per-head decay rates: ALiBi slopes, and TransNormerLLM's per-layer scaling of them."""

from __future__ import annotations

import math

import torch

from tnlm.errors import ConfigError


def _power_of_two_slopes(n: int) -> list[float]:
    return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi slopes, shape (H,). For H a power of two: 2^(-8 (h+1) / H).

    Otherwise: the slopes of the closest lower power of two c, then every second slope of 2c,
    truncated to H (the scheme of the ALiBi paper, used by Baichuan and TransNormerLLM).
    """
    if num_heads < 1:
        raise ConfigError(f"num_heads must be >= 1, got {num_heads}")
    c = 2 ** int(math.floor(math.log2(num_heads)))
    slopes = _power_of_two_slopes(c)
    if c < num_heads:
        slopes += _power_of_two_slopes(2 * c)[0::2][: num_heads - c]
    return torch.tensor(slopes, dtype=torch.float64)


def transnormer_log_decay(num_heads: int, layer_idx: int, num_layers: int) -> torch.Tensor:
    """log(lambda) per head for one layer of TransNormerLLM, shape (H,), float32, <= 0.

    slope_h * (1 - l / (L - 1) + 1e-5), as in the released code (not the paper's formula).
    With a single layer (L = 1) the formula divides by zero; tnlm treats that layer as the first
    layer of a deeper model (factor 1 + 1e-5), so a one-layer model keeps the strongest decay.
    """
    if not 0 <= layer_idx < num_layers:
        raise ConfigError(f"layer_idx must be in [0, {num_layers}), got {layer_idx}")
    depth_frac = layer_idx / (num_layers - 1) if num_layers > 1 else 0.0
    slopes = alibi_slopes(num_heads) * (1.0 - depth_frac + 1e-5)
    return (-slopes).to(torch.float32)
