"""What `tnlm info` reports about a model: architecture, parameter counts, weight memory."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedModel


@dataclass(frozen=True)
class ModelSummary:
    model_type: str
    architecture: dict[str, object]
    num_params: int
    num_embedding_params: int

    @property
    def num_non_embedding_params(self) -> int:
        return self.num_params - self.num_embedding_params

    def weight_bytes(self, bytes_per_param: int) -> int:
        return self.num_params * bytes_per_param


_ARCH_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
    "hidden_dim", "glu_dim", "intermediate_size", "linear_use_lrpe_list", "linear_act_fun", "norm_type",
    "position_embedding", "segment_length", "tie_word_embeddings",
)  # fmt: skip


def summarize(model: PreTrainedModel) -> ModelSummary:
    """Counts parameters once even when tied; works on meta-device models."""
    cfg = model.config
    arch = {f: getattr(cfg, f) for f in _ARCH_FIELDS if getattr(cfg, f, None) is not None}
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = model.get_output_embeddings()
    if head is not None:
        embedding_ids.add(id(head.weight))
    params = {id(p): p for p in model.parameters()}
    n_emb = sum(p.numel() for i, p in params.items() if i in embedding_ids)
    return ModelSummary(cfg.model_type, arch, sum(p.numel() for p in params.values()), n_emb)
