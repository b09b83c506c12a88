"""The Infini-attention Transformer: the Transformer baseline with InfiniAttention in every layer.

Long inputs run segment by segment through the whole stack (each layer's output on a segment needs
only that segment and the memory of earlier ones), so activations scale with the segment, not the
input. The memory keeps its autograd graph across segments unless `detach_memory` is set.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from transformers import initialization as init

from tnlm.layers.infini_attention import InfiniAttention, InfiniState
from tnlm.models.decoder import LayerCache, LayerInputs
from tnlm.models.infini.configuration import InfiniConfig
from tnlm.models.transformer.modeling import TransformerForCausalLM, TransformerModel


class InfiniCache(LayerCache[InfiniState]):
    """Per layer, the compressive memory of completed segments and the keys and values of the current
    partial segment: bounded, memory (B, Hkv, D, D) plus at most about two segments of keys."""


def _init_gate(model: TransformerModel | TransformerForCausalLM, module: nn.Module) -> None:
    """The per-head gates start at config.gate_init (0: sigmoid 0.5, memory and local attention alike)."""
    if isinstance(module, InfiniAttention):
        init.constant_(module.gate, float(model.config.gate_init))


class InfiniModel(TransformerModel):
    config_class = InfiniConfig
    config: InfiniConfig
    cache_class = InfiniCache
    _init_family_weights = _init_gate

    @staticmethod
    def make_attention(config: InfiniConfig) -> nn.Module:
        return InfiniAttention(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim, segment_length=config.segment_length,
            memory_rule=config.memory_rule, detach_memory=config.detach_memory,
            position_embedding=config.position_embedding, rope=config.rope_spec(), bias=config.attention_bias,
        )  # fmt: skip

    def run_layers(
        self, x: torch.Tensor, inputs: LayerInputs, *, cache: InfiniCache | None, hidden_states: list | None
    ) -> torch.Tensor:
        """Chunks of segment_length tokens through all layers, carrying the state (a private one when the
        caller keeps no cache)."""
        state = cache if cache is not None else self.new_cache()
        S, T, mask = self.config.segment_length, x.shape[1], inputs.attention_mask
        past = mask.shape[1] - T if mask is not None else 0
        outs, chunk_hidden = [], []
        for start in range(0, T, S):
            end = min(start + S, T)
            segment = replace(inputs, positions=inputs.positions[:, start:end],
                              attention_mask=mask[:, : past + end] if mask is not None else None)  # fmt: skip
            hs = [] if hidden_states is not None else None
            outs.append(super().run_layers(x[:, start:end], segment, cache=state, hidden_states=hs))
            chunk_hidden.append(hs)
        if hidden_states is not None:
            hidden_states.extend(torch.cat(parts, dim=1) for parts in zip(*chunk_hidden))
        return torch.cat(outs, dim=1)


class InfiniForCausalLM(TransformerForCausalLM):
    config_class = InfiniConfig
    base_model_class = InfiniModel
    _init_family_weights = _init_gate

    def lr_multipliers(self) -> dict[str, float]:
        """The per-head gates get lr * config.gate_lr_multiplier and no weight decay (a failed
        reproduction of the paper traced its gates not training to this)."""
        return {"self_attn.gate": self.config.gate_lr_multiplier}
