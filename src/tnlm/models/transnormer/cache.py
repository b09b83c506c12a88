"""The decoding state of a TransNormer model: one float32 (B, H, Dk, Dv) matrix per layer."""

from __future__ import annotations

import torch


class TransnormerCache:
    """Recurrent state per layer plus the number of tokens seen. Its size does not depend on the
    number of tokens seen: this is what makes TransNormerLLM decode in constant memory."""

    def __init__(self, num_layers: int) -> None:
        self.states: list[torch.Tensor | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.states)

    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states if s is not None)
