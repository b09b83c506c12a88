"""SoftmaxAttention: multi-head attention with grouped K/V heads (MHA / GQA / MQA), RoPE or ALiBi,
and a KV cache. Projection names follow Hugging Face Llama (q_proj, k_proj, v_proj, o_proj)."""

from __future__ import annotations

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.layers.positions import Alibi, RopeSpec, Rotary
from tnlm.layers.sharding import check_head_split
from tnlm.ops.softmax import softmax_attention

POSITION_EMBEDDINGS = ("rope", "alibi")


class KVBuffer:
    """Keys (already rotated) and values of every past token, (B, T_past, Hkv, D) each, in buffers
    with room to grow: a decoded token is written in place, and the buffers are reallocated only when
    full, with 1/8 of their length to spare. (torch.cat, as HF's DynamicCache does, copies the
    whole cache for every token: at 16k tokens that copy doubled the tiny preset's decode step.)"""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self._k, self._v, self.length = k, v, k.shape[1]

    @property
    def k(self) -> torch.Tensor:
        return self._k[:, : self.length]

    @property
    def v(self) -> torch.Tensor:
        return self._v[:, : self.length]

    @property
    def capacity(self) -> int:
        return self._k.shape[1]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        need = self.length + k.shape[1]
        if need > self.capacity:
            room = need + max(256, need // 8)
            self._k, self._v = (self._moved(x, room) for x in (self._k, self._v))
        self._k[:, self.length : need] = k
        self._v[:, self.length : need] = v
        self.length = need

    def _moved(self, x: torch.Tensor, room: int) -> torch.Tensor:
        """x's first `length` positions in a new buffer of `room` positions."""
        new = x.new_empty(x.shape[0], room, *x.shape[2:])
        new[:, : self.length] = x[:, : self.length]
        return new

    def nbytes(self) -> int:
        """Bytes held, spare room included."""
        return self._k.numel() * self._k.element_size() + self._v.numel() * self._v.element_size()


class SoftmaxAttention(nn.Module):
    def __init__(
        self,
        *,
        hidden_size: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        position_embedding: str = "rope",
        rope: RopeSpec | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if num_heads % num_kv_heads:
            raise ConfigError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(f"unknown position_embedding {position_embedding!r}; choose one of {POSITION_EMBEDDINGS}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.head_offset = 0  # the first head this process computes (tensor parallelism keeps a slice)
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)
        self.rotary = Rotary(head_dim, rope or RopeSpec()) if position_embedding == "rope" else None
        self.alibi = Alibi(num_heads) if position_embedding == "alibi" else None

    def shard_heads(self, rank: int, parts: int) -> None:
        """Compute only the rank-th of `parts` equal slices of the query heads and of the key/value heads
        (a group of query heads stays with its key/value head); the caller shards the projections."""
        self.num_kv_heads = check_head_split(self.num_kv_heads, parts, rank)
        self.num_heads = check_head_split(self.num_heads, parts, rank)
        self.head_offset = rank * self.num_heads

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> q (B, T, H, D), k, v (B, T, Hkv, D)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        return q, k, self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.rotary(x, self.rotary.cos_sin(positions)) if self.rotary is not None else x

    def alibi_slopes(self, device: torch.device) -> torch.Tensor | None:
        if self.alibi is None:
            return None
        return self.alibi.slopes(device)[self.head_offset : self.head_offset + self.num_heads]

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: KVBuffer | None = None,
    ) -> tuple[torch.Tensor, KVBuffer]:
        """x (B, T, d); positions (B, T); attention_mask (B, T_past + T), 1 = real token; state: the
        cached keys and values. Returns the output (B, T, d) and the state with the new tokens added
        (the given one, updated in place, or a new one wrapping this call's keys and values)."""
        B, T, _ = x.shape
        q, k, v = self.split_heads(x)
        cos_sin = self.rotary.cos_sin(positions) if self.rotary is not None else None
        if cos_sin is not None:
            q, k = self.rotary(q, cos_sin), self.rotary(k, cos_sin)
        if state is None:
            state = KVBuffer(k, v)
        else:
            state.append(k, v)
            k, v = state.k, state.v
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -k.shape[1] :].bool()[:, None, :].expand(B, T, k.shape[1])
        o = softmax_attention(q, k, v, mask=mask, alibi_slopes=self.alibi_slopes(x.device))
        return self.o_proj(o.reshape(B, T, -1)), state
