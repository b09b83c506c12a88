"""The LLaMA-style Transformer baseline as Hugging Face models: TransformerModel, TransformerForCausalLM.

Parameter names are those of Hugging Face Llama, so converted checkpoints map one to one. The decoder
loop, the block and the causal-LM head are shared with the Infini-attention family, which only swaps
the attention layer, the cache and the segment-wise loop (tnlm.models.infini).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tnlm.layers.infini_attention import InfiniAttention
from tnlm.layers.mlp import SwiGLU
from tnlm.layers.norm import RMSNorm
from tnlm.layers.softmax_attention import SoftmaxAttention
from tnlm.models.causal_lm import CausalLMMixin
from tnlm.models.common import decoder_output, positions_from_mask
from tnlm.models.transformer.cache import KVCache
from tnlm.models.transformer.configuration import TransformerConfig


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention, then SwiGLU, each after an RMSNorm."""

    def __init__(self, config: TransformerConfig, attention: nn.Module) -> None:
        super().__init__()
        d = config.hidden_size
        self.input_layernorm = RMSNorm(d, eps=config.rms_norm_eps)
        self.self_attn = attention
        self.post_attention_layernorm = RMSNorm(d, eps=config.rms_norm_eps)
        self.mlp = SwiGLU(d, config.intermediate_size, bias=config.mlp_bias)

    def forward(
        self, x: torch.Tensor, *, positions: torch.Tensor, attention_mask: torch.Tensor | None, state: object | None
    ) -> tuple[torch.Tensor, object]:
        h = self.input_layernorm(x)
        h, state = self.self_attn(h, positions=positions, attention_mask=attention_mask, state=state)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x)), state


def _check_mask(attention_mask: torch.Tensor | None, shape: tuple[int, int]) -> None:
    if attention_mask is not None and tuple(attention_mask.shape) != shape:
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}; it must cover the cached and the new tokens, "
            f"(batch, past + new) = {shape}"
        )


class TransformerPreTrainedModel(PreTrainedModel):
    config_class = TransformerConfig
    config: TransformerConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["TransformerBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, InfiniAttention):
            init.constant_(module.gate, float(getattr(self.config, "gate_init", 0.0)))


class TransformerModel(TransformerPreTrainedModel):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.layers = nn.ModuleList(
            TransformerBlock(config, self.make_attention(config)) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_init()

    @staticmethod
    def make_attention(config: TransformerConfig) -> nn.Module:
        return SoftmaxAttention(
            hidden_size=config.hidden_size, num_heads=config.num_attention_heads,
            num_kv_heads=config.num_key_value_heads, head_dim=config.head_dim,
            position_embedding=config.position_embedding, rope=config.rope_spec(), bias=config.attention_bias,
        )  # fmt: skip

    def new_cache(self) -> KVCache:
        return KVCache(self.config.num_hidden_layers)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def run_layers(
        self,
        x: torch.Tensor,
        *,
        positions: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: KVCache | None,
        hidden_states: list[torch.Tensor] | None,
    ) -> torch.Tensor:
        """The decoder loop over all layers; the cache (if any) is updated in place."""
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(x)
            state = cache.layers[i] if cache is not None else None
            x, new_state = layer(x, positions=positions, attention_mask=attention_mask, state=state)
            if cache is not None:
                cache.layers[i] = new_state
        return x

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: object | None = None,
        cache_position: torch.LongTensor | None = None,
    ) -> BaseModelOutputWithPast:
        """attention_mask (B, past + T), 1 = real token, left padding allowed: positions count from each
        sequence's first real token. `cache` (alias `past_key_values`) is this family's cache object."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = self.new_cache()
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        past_len = cache.get_seq_length() if cache is not None else 0
        _check_mask(attention_mask, (B, past_len + T))
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, seq_len=T, past_len=past_len, device=x.device)
        position_ids = position_ids.expand(B, T)
        if attention_mask is not None:  # all ones -> None: the unmasked SDPA path
            attention_mask = None if bool(attention_mask.all()) else attention_mask.to(x.device)
        hidden_states = [] if output_hidden_states else None
        x = self.run_layers(
            x, positions=position_ids, attention_mask=attention_mask, cache=cache, hidden_states=hidden_states
        )
        return decoder_output(x, final_norm=self.norm, cache=cache, use_cache=use_cache, hidden_states=hidden_states)


class TransformerForCausalLM(CausalLMMixin, TransformerPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    base_model_class: type[TransformerModel] = TransformerModel

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: object | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
    ) -> CausalLMOutputWithPast:
        """labels (B, T): next-token targets are labels shifted by one inside; -100 is ignored."""
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )  # fmt: skip
        return self.lm_output(out, labels=labels, logits_to_keep=logits_to_keep)
