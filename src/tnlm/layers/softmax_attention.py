"""SoftmaxAttention: multi-head attention with grouped K/V heads (MHA / GQA / MQA), RoPE or ALiBi,
and a KV cache. Projection names follow Hugging Face Llama (q_proj, k_proj, v_proj, o_proj)."""

from __future__ import annotations

import torch
from torch import nn

from tnlm.layers.positions import Alibi, RopeSpec, Rotary
from tnlm.ops.softmax import softmax_attention

POSITION_EMBEDDINGS = ("rope", "alibi")
KVState = tuple[torch.Tensor, torch.Tensor]  # k, v (B, T_past, Hkv, D); k already rotated


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
            raise ValueError(f"num_heads ({num_heads}) must be divisible by num_kv_heads ({num_kv_heads})")
        if position_embedding not in POSITION_EMBEDDINGS:
            raise ValueError(f"unknown position_embedding {position_embedding!r}; choose one of {POSITION_EMBEDDINGS}")
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.q_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(hidden_size, num_kv_heads * head_dim, bias=bias)
        self.o_proj = nn.Linear(num_heads * head_dim, hidden_size, bias=bias)
        self.rotary = Rotary(head_dim, rope or RopeSpec()) if position_embedding == "rope" else None
        self.alibi = Alibi(num_heads) if position_embedding == "alibi" else None

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> q (B, T, H, D), k, v (B, T, Hkv, D)."""
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        return q, k, self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)

    def rotate(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.rotary(x, self.rotary.cos_sin(positions)) if self.rotary is not None else x

    def alibi_slopes(self, device: torch.device) -> torch.Tensor | None:
        return self.alibi.slopes(device) if self.alibi is not None else None

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        state: KVState | None = None,
    ) -> tuple[torch.Tensor, KVState]:
        """x (B, T, d); positions (B, T); attention_mask (B, T_past + T), 1 = real token; state: the
        cached k, v. Returns the output (B, T, d) and k, v including the new tokens."""
        B, T, _ = x.shape
        q, k, v = self.split_heads(x)
        cos_sin = self.rotary.cos_sin(positions) if self.rotary is not None else None
        if cos_sin is not None:
            q, k = self.rotary(q, cos_sin), self.rotary(k, cos_sin)
        if state is not None:
            k, v = torch.cat([state[0], k], dim=1), torch.cat([state[1], v], dim=1)
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -k.shape[1] :].bool()[:, None, :].expand(B, T, k.shape[1])
        o = softmax_attention(q, k, v, mask=mask, alibi_slopes=self.alibi_slopes(x.device))
        return self.o_proj(o.reshape(B, T, -1)), (k, v)
