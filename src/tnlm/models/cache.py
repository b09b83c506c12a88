"""The decoding-cache shape every family shares: one state object per layer plus a token count."""

from __future__ import annotations

from typing import Generic, TypeVar

import torch

State = TypeVar("State")


def state_nbytes(state: object) -> int:
    """Bytes of a layer state: a tensor, a tuple of tensors, or an object with its own nbytes()."""
    if state is None:
        return 0
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, tuple):
        return sum(state_nbytes(s) for s in state)
    return state.nbytes()


class LayerCache(Generic[State]):
    """layers[i] is layer i's decoding state (None before the first call); seen_tokens counts every
    token fed so far, padding included: the length of the attention mask before the next call."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[State | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        return sum(state_nbytes(s) for s in self.layers)
