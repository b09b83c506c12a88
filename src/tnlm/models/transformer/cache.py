"""KV cache of the Transformer family: rotated keys and values of every past token, per layer."""

from __future__ import annotations

import torch

from tnlm.models.cache import LayerCache


class KVCache(LayerCache[tuple[torch.Tensor, torch.Tensor]]):
    """layers[i] = (k, v), each (B, T_past, Hkv, D). Grows by one column per decoded token."""
