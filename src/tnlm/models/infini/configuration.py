"""InfiniConfig: the Transformer baseline's fields plus the Infini-attention memory."""

from __future__ import annotations

from tnlm.models.config import BOOL, NUMBER, POSITIVE, POSITIVE_INT, one_of
from tnlm.models.transformer.configuration import TransformerConfig
from tnlm.ops.infini import MEMORY_RULES


class InfiniConfig(TransformerConfig):
    model_type = "tnlm_infini"
    RULES = {
        **TransformerConfig.RULES, "segment_length": POSITIVE_INT, "memory_rule": one_of(*MEMORY_RULES),
        "gate_init": NUMBER, "gate_lr_multiplier": POSITIVE, "detach_memory": BOOL,
    }  # fmt: skip

    def __init__(
        self,
        *,
        segment_length: int = 2048,
        memory_rule: str = "linear",
        gate_init: float = 0.0,
        gate_lr_multiplier: float = 10.0,
        detach_memory: bool = False,
        **kwargs,  # TransformerConfig's fields
    ) -> None:
        self.segment_length = segment_length  # tokens per segment
        self.memory_rule = memory_rule
        self.gate_init = gate_init
        self.gate_lr_multiplier = gate_lr_multiplier
        self.detach_memory = detach_memory  # True truncates backpropagation at every segment boundary
        super().__init__(**kwargs)
