"""InfiniAttention: softmax attention within segments of S tokens plus a compressive memory of all
earlier segments, mixed per head by sigmoid(gate) (tnlm.ops.infini has the maths).

The layer state carries, per sequence, the memory of the segments it has completed and the keys and
values of its current, partial segment, so segment boundaries fall at each sequence's own positions
(left padding, one-token decoding) and the state never holds more than about two segments of keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.layers.positions import RopeSpec
from tnlm.layers.sharding import local_shard
from tnlm.layers.softmax_attention import SoftmaxAttention
from tnlm.ops.infini import MEMORY_RULES, Memory, empty_memory, infini_attention, pick_memory


@dataclass
class InfiniState:
    memory: Memory  # M (B, Hkv, Dk, Dv), z (B, Hkv, Dk), float32
    k: torch.Tensor  # (B, Tc, Hkv, D) keys of the current segment, before RoPE (the memory takes them raw)
    v: torch.Tensor  # (B, Tc, Hkv, D)
    pos: torch.Tensor  # (B, Tc) position of each cached key, -1 = not in the current segment
    base: torch.Tensor  # (B,) segments absorbed into memory
    length: torch.Tensor  # (B,) real tokens seen

    def nbytes(self) -> int:
        tensors = (*self.memory, self.k, self.v, self.pos, self.base, self.length)
        return sum(t.numel() * t.element_size() for t in tensors)


class InfiniAttention(SoftmaxAttention):
    def __init__(
        self,
        *,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        segment_length: int,
        memory_rule: str = "linear",
        detach_memory: bool = False,
        position_embedding: str = "rope",
        rope: RopeSpec | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__(
            hidden_size=hidden_size, num_heads=num_heads, num_kv_heads=num_kv_heads, head_dim=head_dim,
            position_embedding=position_embedding, rope=rope, bias=bias,
        )  # fmt: skip
        if segment_length < 1:
            raise ConfigError(f"segment_length must be >= 1, got {segment_length}")
        if memory_rule not in MEMORY_RULES:
            raise ConfigError(f"unknown memory_rule {memory_rule!r}; choose one of {MEMORY_RULES}")
        self.segment_length, self.memory_rule, self.detach_memory = segment_length, memory_rule, detach_memory
        self.gate = nn.Parameter(torch.zeros(num_heads))  # beta: one scalar per head, not per channel

    def empty_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> InfiniState:
        D, Hkv = self.head_dim, self.num_kv_heads
        kv = torch.zeros(batch, 0, Hkv, D, device=device, dtype=dtype)
        zeros = torch.zeros(batch, dtype=torch.long, device=device)
        pos = torch.zeros(batch, 0, dtype=torch.long, device=device)
        return InfiniState(empty_memory(batch, Hkv, D, D, device=device), kv, kv, pos, zeros, zeros)

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: InfiniState | None = None,
    ) -> tuple[torch.Tensor, InfiniState]:
        """x (B, T, d); positions (B, T) per sequence; attention_mask (B, ... + T), only its last T
        entries are read (1 = real token). Returns the output (B, T, d) and the next state."""
        B, T, _ = x.shape
        if attention_mask is None:
            real = torch.ones_like(positions, dtype=torch.bool)  # (B, T), True = real token
        else:
            real = attention_mask[:, -T:].bool()
        q, k, v = self.split_heads(x)
        state = state if state is not None else self.empty_state(B, x.device, k.dtype)
        k_all, v_all = torch.cat([state.k, k], dim=1), torch.cat([state.v, v], dim=1)
        k_pos = torch.cat([state.pos, positions.masked_fill(~real, -1)], dim=1)  # (B, Tk)
        S, base = self.segment_length, state.base[:, None]
        q_seg = torch.where(real, positions // S - base, -1)  # relative to the memory's next segment
        k_seg = torch.where(k_pos >= 0, k_pos // S - base, -1)
        length = state.length + real.sum(1)
        folds = length // S - state.base  # (B,) segments completed in this call
        o, memories = infini_attention(
            q, k_all, v_all, q_rot=self.rotate(q, positions), k_rot=self.rotate(k_all, k_pos.clamp(min=0)),
            q_seg=q_seg, k_seg=k_seg, gate=local_shard(self.gate), memory=state.memory, count=int(folds.max()),
            rule=self.memory_rule, detach=self.detach_memory, alibi_slopes=self.alibi_slopes(x.device),
        )  # fmt: skip
        next_state = _next_state(
            memories, k=k_all, v=v_all, k_pos=k_pos, k_seg=k_seg, folds=folds, base=state.base, length=length
        )
        return self.o_proj(o.reshape(B, T, -1)), next_state


def _next_state(
    memories: list[Memory],
    *,
    k: torch.Tensor,
    v: torch.Tensor,
    k_pos: torch.Tensor,
    k_seg: torch.Tensor,
    folds: torch.Tensor,
    base: torch.Tensor,
    length: torch.Tensor,
) -> InfiniState:
    """Per sequence: the memory after its completed segments and the keys of its still open segment;
    leading columns that no sequence needs any more are dropped, so the state stays bounded."""
    keep = k_seg == folds[:, None]  # (B, Tk)
    live = keep.any(0).nonzero()
    start = int(live[0]) if len(live) else k_pos.shape[1]
    k_pos = k_pos.masked_fill(~keep, -1)
    return InfiniState(pick_memory(memories, folds), k[:, start:], v[:, start:], k_pos[:, start:], base + folds, length)
