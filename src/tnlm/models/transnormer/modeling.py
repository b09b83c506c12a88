"""TransNormerLLM as Hugging Face models: TransnormerModel and TransnormerForCausalLM.

Module and parameter names are those of the released checkpoints (OpenNLPLab/TransNormerLLM-385M, -1B,
-7B), so their directories load unchanged. The decoder loop and the causal-LM head are tnlm.models' shared ones; what is TransNormer's own is
here: the block (NormLinearAttention, then SGLU), the recurrent-state cache, the embedding scale,
LRPE's initial frequencies, and packed documents (cu_seqlens).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init

from tnlm.layers.linear_attention import NormLinearAttention
from tnlm.layers.lrpe import Lrpe, lrpe_init_theta
from tnlm.layers.mlp import SGLU
from tnlm.layers.norm import build_norm
from tnlm.models.causal_lm import DecoderForCausalLM
from tnlm.models.decoder import DecoderModel, DecoderPreTrainedModel, LayerCache, LayerInputs
from tnlm.models.transnormer.configuration import TransnormerConfig


class TransnormerCache(LayerCache[torch.Tensor]):
    """The float32 (B, H, Dk, Dv) recurrent state of every layer. Its size does not depend on the
    number of tokens seen: this is what makes TransNormerLLM decode in constant memory."""


class TransnormerBlock(nn.Module):
    """Pre-norm residual block: token mixer (NormLinearAttention), then channel mixer (SGLU)."""

    def __init__(self, config: TransnormerConfig, layer_idx: int) -> None:
        super().__init__()
        d = config.decoder_embed_dim
        self.token_norm = build_norm(config.norm_type, d)
        self.token_mixer = NormLinearAttention(
            embed_dim=d,
            hidden_dim=config.hidden_dim,
            num_heads=config.decoder_attention_heads,
            layer_idx=layer_idx,
            num_layers=config.decoder_layers,
            act_fun=config.linear_act_fun,
            use_lrpe=config.use_lrpe(layer_idx),
            norm_type=config.norm_type,
            bias=config.bias,
            use_decay=config.use_decay,
        )
        self.channel_norm = build_norm(config.norm_type, d)
        self.channel_mixer = SGLU(d, config.glu_dim, bias=config.bias, act=config.glu_act)

    def forward(
        self, x: torch.Tensor, inputs: LayerInputs, state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x (B, T, d); state (B, H, Dk, Dv) float32 from earlier tokens, or None."""
        mask = inputs.attention_mask
        padding = None if mask is None else mask[:, -x.shape[1] :]  # (B, T): the new tokens' part
        h, new_state = self.token_mixer(
            self.token_norm(x), positions=inputs.positions, padding_mask=padding, state=state,
            output_state=inputs.output_state, cu_seqlens=inputs.cu_seqlens,
        )  # fmt: skip
        x = x + h
        x = x + self.channel_mixer(self.channel_norm(x))
        return x, new_state


class TransnormerPreTrainedModel(DecoderPreTrainedModel):
    config_class = TransnormerConfig
    config: TransnormerConfig
    _no_split_modules = ["TransnormerBlock"]
    # checkpoints converted from metaseq carry this bookkeeping entry
    _keys_to_ignore_on_load_unexpected = [r"decoder\.version"]

    def _init_family_weights(self, module: nn.Module) -> None:
        if isinstance(module, Lrpe):
            init.copy_(module.theta, lrpe_init_theta(module.num_heads, module.head_dim))


class TransnormerModel(DecoderModel, TransnormerPreTrainedModel):
    """The cache holds the float32 recurrent state of every layer, so decoding costs the same at any
    position. With cu_seqlens each document starts from an empty state and LRPE position 0."""

    cache_class = TransnormerCache
    supports_packed_documents = True

    def __init__(self, config: TransnormerConfig) -> None:
        super().__init__(config)
        d = config.decoder_embed_dim
        self.embed_tokens = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.embed_scale = 1.0 if config.no_scale_embedding else math.sqrt(d)
        self.layers = nn.ModuleList(TransnormerBlock(config, i) for i in range(config.decoder_layers))
        self.final_norm = build_norm(config.norm_type, d)
        self.post_init()


class TransnormerForCausalLM(DecoderForCausalLM, TransnormerPreTrainedModel):
    base_model_class = TransnormerModel

    def lr_multipliers(self) -> dict[str, float]:
        return {"lrpe.theta": 1.0}  # frequencies, not a weight matrix: no weight decay
