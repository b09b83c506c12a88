"""KV cache of the Transformer family: rotated keys and values of every past token, per layer."""

from __future__ import annotations

import torch


class KVCache:
    """layers[i] = (k, v), each (B, T_past, Hkv, D). Grows by one column per decoded token."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for kv in self.layers if kv is not None for t in kv)
