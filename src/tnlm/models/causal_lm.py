"""The causal language model every family shares: its decoder, the LM head, the loss, the optimizer
groups, and the hooks that let transformers' `model.generate()` drive a model with its own state.

A family's `XForCausalLM(DecoderForCausalLM, XPreTrainedModel)` names its decoder class in
`base_model_class` and its special parameters in `lr_multipliers()`.

transformers builds its own DynamicCache unless told otherwise; every tnlm family keeps its decoding
state in its own LayerCache (TransNormer's recurrent state, the Transformer's keys and values,
Infini-attention's memory), created on the first forward and passed back by generate(). Strategies
that would fork, reorder or rewind that state are refused with a clear error up front.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin
from transformers.generation.configuration_utils import GenerationMode
from transformers.modeling_outputs import CausalLMOutputWithPast

from tnlm.errors import ConfigError, InputError
from tnlm.models.decoder import DecoderModel, DecoderPreTrainedModel, LayerCache

STATE_SAFE_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy: logits (B, T, V) predict labels shifted by one; float32."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index)


def param_groups(
    model: torch.nn.Module, *, lr: float, weight_decay: float, lr_multipliers: dict[str, float] | None = None
) -> list[dict]:
    """Optimizer parameter groups: weight matrices decay; vectors (norm weights, biases) and embedding
    tables (with the head tied to them) do not; a parameter whose name ends with a key of `lr_multipliers`
    gets lr * multiplier and no decay. Empty groups are left out; each group carries a "name" for logging."""
    multipliers = lr_multipliers or {}
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        suffix = next((s for s in multipliers if name.endswith(s)), None)
        if suffix is not None:
            key, group_lr, wd = suffix, lr * multipliers[suffix], 0.0
        else:
            decays = p.dim() >= 2 and id(p) not in embeddings
            key, group_lr, wd = ("decay", lr, weight_decay) if decays else ("no_decay", lr, 0.0)
        groups.setdefault(key, {"name": key, "params": [], "lr": group_lr, "weight_decay": wd})["params"].append(p)
    return list(groups.values())


class DecoderForCausalLM(DecoderPreTrainedModel, GenerationMixin):
    base_model_class: type[DecoderModel]
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # transformers refuses assisted generation for stateful models (they cannot roll back a state)
    _is_stateful = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = self.base_model_class(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @property
    def supports_packed_documents(self) -> bool:
        """Whether forward takes cu_seqlens (documents packed in one row)."""
        return self.base_model_class.supports_packed_documents

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter-name suffix -> learning-rate multiplier; these parameters get no weight decay."""
        return {}

    def param_groups(self, *, lr: float, weight_decay: float) -> list[dict]:
        """Optimizer groups for torch.optim: decay on matrices, none on vectors and on the parameters
        named by `lr_multipliers()`."""
        return param_groups(self, lr=lr, weight_decay=weight_decay, lr_multipliers=self.lr_multipliers())

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: LayerCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        cache: LayerCache | None = None,
        cache_position: torch.LongTensor | None = None,
        logits_to_keep: int = 0,
        cu_seqlens: torch.Tensor | None = None,
        output_attentions: bool | None = None,
    ) -> CausalLMOutputWithPast:
        """The decoder's arguments (DecoderModel.forward), plus labels (B, T): next-token targets are
        labels shifted by one inside, -100 is ignored; logits_to_keep: logits of the last positions only
        (0: all). output_attentions is accepted because peft's causal-LM wrapper always passes it;
        no tnlm family returns attention weights, so True is refused."""
        if output_attentions:
            raise InputError(f"{type(self).__name__} does not return attention weights; call it with "
                             "output_attentions=False")  # fmt: skip
        out = self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds, use_cache=use_cache,
            output_hidden_states=output_hidden_states, cu_seqlens=cu_seqlens,
        )  # fmt: skip
        h = out.last_hidden_state
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False

    def _validate_generation_mode(self, generation_mode, generation_config, generation_mode_kwargs) -> None:
        if generation_mode not in STATE_SAFE_MODES:
            raise ConfigError(
                f"{type(self).__name__} keeps its own decoding state, which {generation_mode.value} cannot "
                "use (it would need to fork, reorder or rewind that state; a recurrent state cannot be "
                "rewound). Use greedy decoding or sampling: num_beams=1, no assistant model, no contrastive "
                "search or DoLa."
            )
        super()._validate_generation_mode(generation_mode, generation_config, generation_mode_kwargs)

    def _reorder_cache(self, cache: object, beam_idx: object) -> object:
        raise ConfigError(
            f"{type(self).__name__}'s decoding state cannot be reordered for beam search; use num_beams=1"
        )
