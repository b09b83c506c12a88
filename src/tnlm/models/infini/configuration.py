"""InfiniConfig: the Transformer baseline's fields plus the Infini-attention memory."""

from __future__ import annotations

from tnlm.errors import ConfigError
from tnlm.models.transformer.configuration import TransformerConfig
from tnlm.ops.infini import MEMORY_RULES


class InfiniConfig(TransformerConfig):
    model_type = "tnlm_infini"

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
        self.segment_length = segment_length
        self.memory_rule = memory_rule
        self.gate_init = gate_init
        self.gate_lr_multiplier = gate_lr_multiplier
        self.detach_memory = detach_memory  # True truncates backpropagation at every segment boundary
        super().__init__(**kwargs)

    def validate_shapes(self) -> None:
        super().validate_shapes()
        if not isinstance(self.segment_length, int) or self.segment_length < 1:
            raise ConfigError(
                f"InfiniConfig.segment_length must be a positive integer (tokens per segment), got {self.segment_length!r}"
            )
        if self.memory_rule not in MEMORY_RULES:
            raise ConfigError(f"InfiniConfig.memory_rule {self.memory_rule!r} is unknown; choose one of {MEMORY_RULES}")
        if self.gate_lr_multiplier <= 0:
            raise ConfigError(f"InfiniConfig.gate_lr_multiplier must be > 0, got {self.gate_lr_multiplier}")
