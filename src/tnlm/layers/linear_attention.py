"""NormLinearAttention: TransNormerLLM's token mixer (decayed linear attention, SRMSNorm, gate u)."""

from __future__ import annotations

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.layers.activations import feature_map
from tnlm.layers.decay import transnormer_log_decay
from tnlm.layers.lrpe import Lrpe
from tnlm.layers.norm import build_norm
from tnlm.layers.sharding import check_head_split
from tnlm.ops.lightning import lightning_attn, recurrent_lightning_attn

# With a state from earlier tokens, up to this many new tokens take the RNN form (decoding);
# longer inputs take the block algorithm (prefill, training).
RECURRENT_MAX_TOKENS = 16


class NormLinearAttention(nn.Module):
    """o = out_proj(u * norm(LinearAttn(act(q), act(k), v))), heads are contiguous slices of hidden.

    `block_attn` replaces the block algorithm `lightning_attn` when set (sequence parallelism sets one
    that passes the state between processes); `shard_heads` keeps a slice of the heads (tensor parallelism).
    """

    block_attn = None

    def __init__(
        self,
        *,
        embed_dim: int,
        hidden_dim: int,
        num_heads: int,
        layer_idx: int,
        num_layers: int,
        act_fun: str = "silu",
        use_lrpe: bool = False,
        norm_type: str = "simplermsnorm",
        bias: bool = False,
        use_decay: bool = True,
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ConfigError(f"hidden_dim ({hidden_dim}) must be divisible by the number of heads ({num_heads})")
        self.num_heads, self.head_dim = num_heads, hidden_dim // num_heads
        self.heads = slice(0, num_heads)  # the heads this process computes
        self.layer_idx, self.num_layers, self.use_decay = layer_idx, num_layers, use_decay
        self.act = feature_map(act_fun)
        self.qkvu_proj = nn.Linear(embed_dim, 4 * hidden_dim, bias=bias)
        self.out_proj = nn.Linear(hidden_dim, embed_dim, bias=bias)
        self.lrpe = Lrpe(num_heads, self.head_dim) if use_lrpe else None
        self.norm = build_norm(norm_type, hidden_dim)
        self._log_decay: dict[torch.device, torch.Tensor] = {}

    def log_decay(self, device: torch.device) -> torch.Tensor:
        """(H,) float32; fixed by (H, layer, L), so it is computed, not stored in the state dict. Without
        decay (the paper's ablation) it is 0: lambda = 1, every past token weighs the same."""
        if device not in self._log_decay:
            ld = transnormer_log_decay(self.num_heads, self.layer_idx, self.num_layers)[self.heads]
            ld = ld if self.use_decay else torch.zeros_like(ld)
            self._log_decay[device] = ld.to(device)
        return self._log_decay[device]

    def shard_heads(self, rank: int, parts: int) -> None:
        """Compute only heads [rank * H / parts, (rank + 1) * H / parts): the caller shards the
        projections (and LRPE's frequencies) to match, and normalises across the parts."""
        local = check_head_split(self.num_heads, parts, rank)
        self.heads = slice(rank * local, (rank + 1) * local)
        self._log_decay.clear()

    def forward(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        padding_mask: torch.Tensor | None = None,
        state: torch.Tensor | None = None,
        output_state: bool = False,
        cu_seqlens: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x: (B, T, d); positions: (B, T) absolute indices (for LRPE); padding_mask: (B, T), 1 = real
        token; state: (B, H, Dk, Dv) float32 from earlier tokens; cu_seqlens: offsets of sequences
        packed along T (B = 1), each starting from an empty state. Returns (out, new state or None)."""
        B, T, _ = x.shape
        qkvu = self.qkvu_proj(x)  # (B, T, 4 hidden): q, k, v, u
        hidden = qkvu.shape[-1] // 4
        # every feature map acts elementwise: one pass over q and k together
        q, k = self.act(qkvu[..., : 2 * hidden]).view(B, T, 2, -1, self.head_dim).unbind(2)  # (B, T, H, hd)
        v, u = qkvu[..., 2 * hidden : 3 * hidden].view(B, T, -1, self.head_dim), qkvu[..., 3 * hidden :]
        if self.lrpe is not None:
            q, k = self.lrpe.pair(q, k, positions)  # (B, T, H, 2 hd)
        if padding_mask is not None:
            # a padded token adds nothing to the state: k^T v = 0
            v = v.masked_fill(~padding_mask.bool()[:, :, None, None], 0.0)
        log_decay = self.log_decay(x.device)
        block_attn = self.block_attn or lightning_attn
        if cu_seqlens is not None:
            o, new_state = block_attn(q, k, v, log_decay, output_final_state=output_state, cu_seqlens=cu_seqlens)
        else:
            attn = recurrent_lightning_attn if state is not None and T <= RECURRENT_MAX_TOKENS else block_attn
            o, new_state = attn(q, k, v, log_decay, initial_state=state, output_final_state=output_state)
        o = self.norm(o.reshape(B, T, -1))  # over all heads together
        return self.out_proj(u * o), new_state
