"""The LLaMA-style Transformer baseline as Hugging Face models: TransformerModel, TransformerForCausalLM.

Parameter names are those of Hugging Face Llama, so converted checkpoints map one to one. The decoder
loop and the causal-LM head are tnlm.models' shared ones; what is the Transformer's own is here: the
block (softmax attention, then SwiGLU, each after an RMSNorm) and the KV cache.
"""

from __future__ import annotations

import torch
from torch import nn

from tnlm.layers.mlp import SwiGLU
from tnlm.layers.norm import RMSNorm
from tnlm.layers.softmax_attention import KVBuffer, SoftmaxAttention
from tnlm.models.causal_lm import DecoderForCausalLM
from tnlm.models.decoder import DecoderModel, DecoderPreTrainedModel, LayerCache, LayerInputs
from tnlm.models.transformer.configuration import TransformerConfig


class KVCache(LayerCache[KVBuffer]):
    """layers[i] is a KVBuffer: .k and .v, each (B, T_past, Hkv, D), growing by one column per
    decoded token without copying the past."""


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention, then SwiGLU, each after an RMSNorm. The attention layer is
    given, so a family that only swaps it reuses the block."""

    def __init__(self, config: TransformerConfig, attention: nn.Module) -> None:
        super().__init__()
        d = config.hidden_size
        self.input_layernorm = RMSNorm(d, eps=config.rms_norm_eps)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(d, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(d, config.intermediate_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor, inputs: LayerInputs, state: object | None) -> tuple[torch.Tensor, object]:
        h = self.input_layernorm(x)
        h, state = self.self_attn(h, positions=inputs.positions, attention_mask=inputs.attention_mask, state=state)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), state


class TransformerPreTrainedModel(DecoderPreTrainedModel):
    config_class = TransformerConfig
    config: TransformerConfig
    _no_split_modules = ["TransformerBlock"]


class TransformerModel(DecoderModel, TransformerPreTrainedModel):
    cache_class = KVCache

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(
            TransformerBlock(config, self.make_attention(config)) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    @property
    def final_norm(self) -> nn.Module:
        return self.norm  # Llama's name, so that model.norm.weight converts one to one

    @staticmethod
    def make_attention(config: TransformerConfig) -> nn.Module:
        return SoftmaxAttention(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
            position_embedding=config.position_embedding, rope=config.rope_spec(), bias=config.attention_bias,
        )  # fmt: skip


class TransformerForCausalLM(DecoderForCausalLM, TransformerPreTrainedModel):
    base_model_class = TransformerModel
