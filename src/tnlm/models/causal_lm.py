"""What every tnlm causal-LM class shares: embedding accessors, optimizer groups, and the LM head step.

A family's `XForCausalLM(CausalLMMixin, XPreTrainedModel, GenerationMixin)` sets `self.model` (with an
`embed_tokens`) and `self.lm_head`, and names its special parameters in `lr_multipliers()`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from tnlm.models.common import causal_lm_loss, param_groups
from tnlm.models.generation_utils import OwnStateGenerationMixin


class CausalLMMixin(OwnStateGenerationMixin):
    model: nn.Module
    lm_head: nn.Linear

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
        """Optimizer groups (the trainer's hook): decay on matrices, none on vectors and on the
        parameters named by `lr_multipliers()`."""
        return param_groups(self, lr=lr, weight_decay=weight_decay, lr_multipliers=self.lr_multipliers())

    def lm_output(
        self, out: BaseModelOutputWithPast, *, labels: torch.Tensor | None, logits_to_keep: int
    ) -> CausalLMOutputWithPast:
        """Logits of the last `logits_to_keep` positions (0: all), and the shifted loss when labels are given."""
        h = out.last_hidden_state
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = causal_lm_loss(logits, labels) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache, hidden_states=out.hidden_states)
