"""TransformerConfig: a LLaMA-style decoder (pre-norm RMSNorm, SwiGLU, RoPE or ALiBi, MHA/GQA/MQA).

Field names follow Hugging Face `LlamaConfig` where the two share a meaning, so conversion is a
renaming of RoPE fields only (tnlm.models.convert).
"""

from __future__ import annotations

from tnlm.errors import ConfigError
from tnlm.layers.positions import RopeSpec
from tnlm.layers.softmax_attention import POSITION_EMBEDDINGS
from tnlm.models.config import BOOL, POSITIVE, POSITIVE_INT, DecoderConfig, one_of
from tnlm.ops.rotary import ROPE_TYPES


def _default_head_dim(hidden_size: object, num_heads: object) -> int | None:
    """hidden_size / heads when both are usable; otherwise None, and the check names the bad field."""
    if isinstance(hidden_size, int) and isinstance(num_heads, int) and num_heads > 0:
        return hidden_size // num_heads
    return None


class TransformerConfig(DecoderConfig):
    model_type = "tnlm_transformer"
    RULES = {
        "vocab_size": POSITIVE_INT, "hidden_size": POSITIVE_INT, "intermediate_size": POSITIVE_INT,
        "num_hidden_layers": POSITIVE_INT, "num_attention_heads": POSITIVE_INT, "num_key_value_heads": POSITIVE_INT,
        "head_dim": POSITIVE_INT, "position_embedding": one_of(*POSITION_EMBEDDINGS), "rope_theta": POSITIVE,
        "rope_type": one_of(*ROPE_TYPES), "rope_factor": POSITIVE, "rope_low_freq_factor": POSITIVE,
        "rope_high_freq_factor": POSITIVE, "rope_original_max_position_embeddings": POSITIVE_INT,
        "max_position_embeddings": POSITIVE_INT, "rms_norm_eps": POSITIVE, "attention_bias": BOOL, "mlp_bias": BOOL,
        "initializer_range": POSITIVE,
    }  # fmt: skip

    def __init__(
        self,
        *,
        vocab_size: int = 64000,
        hidden_size: int = 1024,
        intermediate_size: int = 2816,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 8,
        num_key_value_heads: int | None = None,
        head_dim: int | None = None,
        position_embedding: str = "rope",
        rope_theta: float = 10000.0,
        rope_type: str = "default",
        rope_factor: float = 1.0,
        rope_low_freq_factor: float = 1.0,
        rope_high_freq_factor: float = 4.0,
        rope_original_max_position_embeddings: int = 8192,
        max_position_embeddings: int = 2048,
        rms_norm_eps: float = 1e-6,
        attention_bias: bool = False,
        mlp_bias: bool = False,
        initializer_range: float = 0.02,
        **kwargs,  # DecoderConfig's fields (use_cache, special token ids, tie_word_embeddings) and PreTrainedConfig's
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = _default_head_dim(hidden_size, num_attention_heads) if head_dim is None else head_dim
        self.position_embedding = position_embedding
        self.rope_theta = rope_theta
        self.rope_type = rope_type
        self.rope_factor = rope_factor
        self.rope_low_freq_factor = rope_low_freq_factor
        self.rope_high_freq_factor = rope_high_freq_factor
        self.rope_original_max_position_embeddings = rope_original_max_position_embeddings
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.initializer_range = initializer_range
        super().__init__(**kwargs)

    def rope_spec(self) -> RopeSpec:
        return RopeSpec(
            theta=self.rope_theta, rope_type=self.rope_type, factor=self.rope_factor,
            low_freq_factor=self.rope_low_freq_factor, high_freq_factor=self.rope_high_freq_factor,
            original_max_len=self.rope_original_max_position_embeddings,
        )  # fmt: skip

    def check_consistency(self) -> None:
        name = type(self).__name__
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{name}.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads}): each K/V head serves a whole group of query heads"
            )
        if self.position_embedding != "rope":
            return
        if self.head_dim % 2 or (self.rope_type == "ntk" and self.head_dim < 4):
            raise ConfigError(f"{name}.head_dim must be even for RoPE (and >= 4 for ntk), got {self.head_dim}")
        if self.rope_type == "llama3" and self.rope_high_freq_factor <= self.rope_low_freq_factor:
            raise ConfigError(
                f"{name}.rope_high_freq_factor ({self.rope_high_freq_factor}) must be above rope_low_freq_factor "
                f"({self.rope_low_freq_factor}) for llama3 scaling"
            )
