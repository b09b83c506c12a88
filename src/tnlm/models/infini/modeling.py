"""The Infini-attention Transformer: the Transformer baseline with InfiniAttention in every layer.

Long inputs run segment by segment through the whole stack (each layer's output on a segment needs
only that segment and the memory of earlier ones), so activations scale with the segment, not the
input. The memory keeps its autograd graph across segments unless `detach_memory` is set.
"""

from __future__ import annotations

import torch
from torch import nn

from tnlm.layers.infini_attention import InfiniAttention
from tnlm.models.infini.cache import InfiniCache
from tnlm.models.infini.configuration import InfiniConfig
from tnlm.models.transformer.modeling import TransformerForCausalLM, TransformerModel


class InfiniModel(TransformerModel):
    config_class = InfiniConfig
    config: InfiniConfig

    @staticmethod
    def make_attention(config: InfiniConfig) -> nn.Module:
        return InfiniAttention(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim, segment_length=config.segment_length,
            memory_rule=config.memory_rule, detach_memory=config.detach_memory,
            position_embedding=config.position_embedding, rope=config.rope_spec(), bias=config.attention_bias,
        )  # fmt: skip

    def new_cache(self) -> InfiniCache:
        return InfiniCache(self.config.num_hidden_layers)

    def run_layers(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: InfiniCache | None,
        hidden_states: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """Chunks of segment_length tokens through all layers, carrying the state (a private one when the
        caller keeps no cache). attention_mask (B, past + T) or None."""
        state = cache if cache is not None else self.new_cache()
        S, T = self.config.segment_length, x.shape[1]
        past = attention_mask.shape[1] - T if attention_mask is not None else 0
        outs, chunk_hidden = [], []
        for start in range(0, T, S):
            end = min(start + S, T)
            mask = attention_mask[:, : past + end] if attention_mask is not None else None
            hs = [] if hidden_states is not None else None
            out = super().run_layers(
                x[:, start:end], positions=positions[:, start:end], attention_mask=mask, cache=state, hidden_states=hs
            )
            outs.append(out)
            chunk_hidden.append(hs)
        if hidden_states is not None:
            hidden_states.extend(torch.cat(parts, dim=1) for parts in zip(*chunk_hidden))
        return torch.cat(outs, dim=1)


class InfiniForCausalLM(TransformerForCausalLM):
    config_class = InfiniConfig
    base_model_class = InfiniModel

    def lr_multipliers(self) -> dict[str, float]:
        """The per-head gates get lr * config.gate_lr_multiplier and no weight decay (a failed
        reproduction of the paper traced its gates not training to this)."""
        return {"self_attn.gate": self.config.gate_lr_multiplier}
