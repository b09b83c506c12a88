"""TransNormerLLM as Hugging Face models: TransnormerModel and TransnormerForCausalLM.

Module and parameter names follow the released checkpoints exactly (see docs: transnormer spec).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tnlm.layers.linear_attention import NormLinearAttention
from tnlm.layers.lrpe import Lrpe, lrpe_init_theta
from tnlm.layers.mlp import SGLU
from tnlm.layers.norm import build_norm
from tnlm.models.causal_lm import CausalLMMixin
from tnlm.models.common import decoder_output, positions_from_cu_seqlens, positions_from_mask
from tnlm.models.transnormer.cache import TransnormerCache
from tnlm.models.transnormer.configuration import TransnormerConfig


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
        )
        self.channel_norm = build_norm(config.norm_type, d)
        self.channel_mixer = SGLU(d, config.glu_dim, bias=config.bias)

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
        h, new_state = self.token_mixer(
            self.token_norm(x), positions=positions, padding_mask=padding_mask, state=state,
            output_state=output_state, cu_seqlens=cu_seqlens,
        )  # fmt: skip
        x = x + h
        x = x + self.channel_mixer(self.channel_norm(x))
        return x, new_state


class TransnormerPreTrainedModel(PreTrainedModel):
    config_class = TransnormerConfig
    config: TransnormerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["TransnormerBlock"]
    # checkpoints converted from metaseq carry this bookkeeping entry
    _keys_to_ignore_on_load_unexpected = [r"decoder\.version"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, Lrpe):
            init.copy_(module.theta, lrpe_init_theta(module.num_heads, module.head_dim))


class TransnormerModel(TransnormerPreTrainedModel):
    def __init__(self, config: TransnormerConfig) -> None:
        super().__init__(config)
        d = config.decoder_embed_dim
        self.embed_tokens = nn.Embedding(config.vocab_size, d, padding_idx=config.pad_token_id)
        self.embed_scale = 1.0 if config.no_scale_embedding else math.sqrt(d)
        self.layers = nn.ModuleList(TransnormerBlock(config, i) for i in range(config.decoder_layers))
        self.final_norm = build_norm(config.norm_type, d)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: TransnormerCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: TransnormerCache | None = None,
        cache_position: torch.LongTensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPast:
        """attention_mask: (B, past + T), 1 = real token (left padding supported); the cache holds the
        float32 recurrent state of every layer, so decoding costs the same at any position.
        cu_seqlens: (N + 1,) offsets of N documents packed in one row (B = 1): each document starts
        from an empty state and LRPE position 0, as if it were alone; no cache."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        if cu_seqlens is not None and (use_cache or cache is not None):
            raise ValueError("cu_seqlens packs documents for training or scoring; call without a cache")
        use_cache = (self.config.use_cache and cu_seqlens is None) if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = TransnormerCache(self.config.decoder_layers)
        x = self.embed_tokens(input_ids) * self.embed_scale if inputs_embeds is None else inputs_embeds
        B, T, _ = x.shape
        past_len = cache.get_seq_length() if cache is not None else 0
        if position_ids is None and cu_seqlens is not None:
            position_ids = positions_from_cu_seqlens(cu_seqlens, seq_len=T).to(x.device)
        elif position_ids is None:
            position_ids = positions_from_mask(attention_mask, seq_len=T, past_len=past_len, device=x.device)
        padding_mask = None
        if attention_mask is not None and not bool(attention_mask[:, -T:].all()):
            padding_mask = attention_mask[:, -T:].to(x.device)
        hidden_states = [] if output_hidden_states else None
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(x)
            state = cache.layers[i] if cache is not None else None
            x, new_state = layer(
                x, positions=position_ids, padding_mask=padding_mask, state=state,
                output_state=cache is not None, cu_seqlens=cu_seqlens,
            )  # fmt: skip
            if cache is not None:
                cache.layers[i] = new_state
        return decoder_output(x, final_norm=self.final_norm, cache=cache, use_cache=use_cache, hidden_states=hidden_states)


class TransnormerForCausalLM(CausalLMMixin, TransnormerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: TransnormerConfig) -> None:
        super().__init__(config)
        self.model = TransnormerModel(config)
        self.lm_head = nn.Linear(config.decoder_embed_dim, config.vocab_size, bias=False)
        self.post_init()

    def lr_multipliers(self) -> dict[str, float]:
        return {"lrpe.theta": 1.0}  # frequencies, not a weight matrix: no weight decay

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: TransnormerCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: TransnormerCache | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        cu_seqlens: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """labels (B, T): next-token targets are labels shifted by one inside; -100 is ignored."""
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
            cu_seqlens=cu_seqlens,
        )
        return self.lm_output(out, labels=labels, logits_to_keep=logits_to_keep)
