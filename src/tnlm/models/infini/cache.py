"""Decoding state of the Infini-attention family: per layer, the compressive memory of completed
segments and the keys/values of the current partial segment (tnlm.layers.infini_attention.InfiniState)."""

from __future__ import annotations

from tnlm.layers.infini_attention import InfiniState


class InfiniCache:
    """Bounded in size: memory (B, Hkv, D, D) plus at most about two segments of keys per layer."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[InfiniState | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens seen, padding included: the length of the attention mask before the next call."""
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        return sum(s.nbytes() for s in self.layers if s is not None)
