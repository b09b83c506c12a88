"""Decoding state of the Infini-attention family: per layer, the compressive memory of completed
segments and the keys/values of the current partial segment (tnlm.layers.infini_attention.InfiniState)."""

from __future__ import annotations

from tnlm.layers.infini_attention import InfiniState
from tnlm.models.cache import LayerCache


class InfiniCache(LayerCache[InfiniState]):
    """Bounded in size: memory (B, Hkv, D, D) plus at most about two segments of keys per layer."""
