"""The decoder every tnlm family runs: embedding -> blocks, each with its own decoding state -> final norm.

A family folder supplies its configuration, its block and its cache type, and builds the modules;
`DecoderModel.forward` is the one loop:

    x = embed_tokens(input_ids) * embed_scale                        (B, T, d)
    for i, block in enumerate(layers):
        x, cache.layers[i] = block(x, inputs, cache.layers[i])       inputs: LayerInputs, shared by all
    return final_norm(x)

A block takes `(x, inputs, state)` and returns `(x, new_state)`; the state is whatever the block's
token mixer carries from one call to the next (a recurrent matrix, keys and values, a memory), and
`LayerCache` keeps one per layer between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPast

from tnlm.errors import InputError
from tnlm.layers.norm import RMSNorm

State = TypeVar("State")


def state_nbytes(state: object) -> int:
    """Bytes of one layer's decoding state: a tensor, or an object with its own nbytes()."""
    if state is None:
        return 0
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    return state.nbytes()


class LayerCache(Generic[State]):
    """layers[i] is layer i's decoding state (None before the first call); seen_tokens counts every
    token fed so far, padding included: the length of the attention mask before the next call."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[State | None] = [None] * num_layers
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen_tokens

    def __len__(self) -> int:
        return len(self.layers)

    def nbytes(self) -> int:
        """Memory of the decoding state: the one measure tnlm reports (generation stats, benchmarks)."""
        return sum(state_nbytes(s) for s in self.layers)


@dataclass(frozen=True)
class LayerInputs:
    """What every block of one forward call sees besides the hidden states."""

    positions: torch.Tensor  # (B, T) position of each new token in its own sequence
    attention_mask: torch.Tensor | None  # (B, past + T), 1 = real token; None when nothing is padded
    cu_seqlens: torch.Tensor | None  # (N + 1,) offsets of N documents packed in one row (B = 1)
    output_state: bool  # whether the caller keeps the blocks' new states (a cache)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, *, seq_len: int) -> torch.Tensor:
    """(1, T) positions of documents packed in one row: each restarts at 0 at its offset."""
    t = torch.arange(seq_len, device=cu_seqlens.device)
    doc = torch.searchsorted(cu_seqlens[1:].long(), t, right=True).clamp(max=cu_seqlens.numel() - 2)
    return (t - cu_seqlens.long()[doc]).unsqueeze(0)


def positions_from_mask(
    attention_mask: torch.Tensor | None, *, seq_len: int, past_len: int, device: torch.device
) -> torch.Tensor:
    """Absolute position of each new token in its own sequence, (B, T) or (1, T).

    attention_mask (B, past + T), 1 = real token, may be left-padded: a sequence's first real
    token gets position 0 whatever the padding before it.
    """
    if attention_mask is None:
        return (torch.arange(seq_len, device=device) + past_len).unsqueeze(0)
    pos = attention_mask.long().cumsum(-1) - 1
    return pos[:, -seq_len:].clamp(min=0).to(device)


class DecoderPreTrainedModel(PreTrainedModel):
    """What every family's Hugging Face classes share: the weight initialisation and the layout."""

    base_model_prefix = "model"
    supports_gradient_checkpointing = False

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
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        else:
            self._init_family_weights(module)

    def _init_family_weights(self, module: nn.Module) -> None:
        """A family's own parameters (LRPE frequencies, Infini-attention gates); none by default."""


class DecoderModel(DecoderPreTrainedModel):
    """embedding -> blocks with per-layer state -> final norm. A family's __init__ sets embed_tokens,
    layers and final_norm (and embed_scale), then calls post_init()."""

    cache_class: type[LayerCache] = LayerCache
    supports_packed_documents = False  # whether the blocks take cu_seqlens
    embed_scale: float = 1.0
    embed_tokens: nn.Embedding
    layers: nn.ModuleList
    final_norm: nn.Module

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def new_cache(self) -> LayerCache:
        return self.cache_class(len(self.layers))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: LayerCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: LayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPast:
        """input_ids (B, T), or inputs_embeds (B, T, d). attention_mask (B, past + T), 1 = real token,
        left padding allowed: positions count from each sequence's first real token. `cache` (alias
        `past_key_values`) is this family's LayerCache; out.cache returns it when use_cache.
        cu_seqlens (N + 1,): N documents packed in one row (B = 1), each as if it were alone (families
        with supports_packed_documents; no cache)."""
        x = self._embed(input_ids, inputs_embeds)
        cache = cache if cache is not None else past_key_values
        use_cache = self._use_cache(use_cache, cache=cache, cu_seqlens=cu_seqlens)
        if use_cache and cache is None:
            cache = self.new_cache()
        inputs = self._layer_inputs(x, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                    cu_seqlens=cu_seqlens)  # fmt: skip
        hidden_states = [] if output_hidden_states else None
        x = self.run_layers(x, inputs, cache=cache, hidden_states=hidden_states)
        if cache is not None:
            cache.seen_tokens += x.shape[1]
        x = self.final_norm(x)
        if hidden_states is not None:
            hidden_states.append(x)
        return BaseModelOutputWithPast(
            last_hidden_state=x,
            cache=cache if use_cache else None,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )

    def run_layers(
        self, x: torch.Tensor, inputs: LayerInputs, *, cache: LayerCache | None, hidden_states: list | None
    ) -> torch.Tensor:
        """Every block in order; the cache (if any) is updated in place."""
        for i, layer in enumerate(self.layers):
            if hidden_states is not None:
                hidden_states.append(x)
            state = cache.layers[i] if cache is not None else None
            x, new_state = layer(x, inputs, state)
            if cache is not None:
                cache.layers[i] = new_state
        return x

    def _embed(self, input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise InputError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is not None:
            return inputs_embeds
        x = self.embed_tokens(input_ids)
        return x * self.embed_scale if self.embed_scale != 1.0 else x

    def _use_cache(self, use_cache: bool | None, *, cache: LayerCache | None, cu_seqlens: torch.Tensor | None) -> bool:
        if cu_seqlens is None:
            return self.config.use_cache if use_cache is None else use_cache
        if not self.supports_packed_documents:
            raise InputError(f"{type(self).__name__} does not take cu_seqlens (packed documents); "
                             "give each document its own row, with an attention_mask for the padding")  # fmt: skip
        if use_cache or cache is not None:
            raise InputError("cu_seqlens packs documents for training or scoring; call without a cache")
        return False

    def _layer_inputs(
        self,
        x: torch.Tensor,
        *,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None,
        cache: LayerCache | None,
        cu_seqlens: torch.Tensor | None,
    ) -> LayerInputs:
        B, T = x.shape[:2]
        past_len = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None and tuple(attention_mask.shape) != (B, past_len + T):
            raise InputError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; it must cover the cached and the new "
                f"tokens, (batch, past + new) = {(B, past_len + T)}"
            )
        if position_ids is None and cu_seqlens is not None:
            position_ids = positions_from_cu_seqlens(cu_seqlens, seq_len=T).to(x.device)
        elif position_ids is None:
            position_ids = positions_from_mask(attention_mask, seq_len=T, past_len=past_len, device=x.device)
        if attention_mask is not None:  # all ones -> None: the unmasked fast paths
            attention_mask = None if bool(attention_mask.all()) else attention_mask.to(x.device)
        return LayerInputs(positions=position_ids.expand(B, T), attention_mask=attention_mask,
                           cu_seqlens=cu_seqlens, output_state=cache is not None)  # fmt: skip
