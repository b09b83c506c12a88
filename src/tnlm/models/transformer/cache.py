"""KV cache of the Transformer family: rotated keys and values of every past token, per layer."""

from __future__ import annotations

from tnlm.layers.softmax_attention import KVBuffer
from tnlm.models.cache import LayerCache


class KVCache(LayerCache[KVBuffer]):
    """layers[i] is a KVBuffer: .k and .v, each (B, T_past, Hkv, D), growing by one column per
    decoded token without copying the past."""
