"""TransformerConfig: a LLaMA-style decoder (pre-norm RMSNorm, SwiGLU, RoPE or ALiBi, MHA/GQA/MQA).

Field names follow Hugging Face `LlamaConfig` where the two share a meaning, so conversion is a
renaming of RoPE fields only (tnlm.models.convert).
"""

from __future__ import annotations

from transformers import PreTrainedConfig

from tnlm.errors import ConfigError
from tnlm.layers.positions import RopeSpec
from tnlm.layers.softmax_attention import POSITION_EMBEDDINGS
from tnlm.ops.rotary import ROPE_TYPES


class TransformerConfig(PreTrainedConfig):
    model_type = "tnlm_transformer"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

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
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = False,
        **kwargs,  # PreTrainedConfig's own fields (architectures, dtype, ...)
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.head_dim = head_dim if head_dim is not None else hidden_size // max(num_attention_heads, 1)
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
        self.use_cache = use_cache
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.validate_shapes()

    def rope_spec(self) -> RopeSpec:
        return RopeSpec(
            theta=self.rope_theta, rope_type=self.rope_type, factor=self.rope_factor,
            low_freq_factor=self.rope_low_freq_factor, high_freq_factor=self.rope_high_freq_factor,
            original_max_len=self.rope_original_max_position_embeddings,
        )  # fmt: skip

    def validate_shapes(self) -> None:
        """Raise a ConfigError that names the field to fix."""
        name = type(self).__name__
        for field in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                      "num_key_value_heads", "head_dim"):  # fmt: skip
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}.{field} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"{name}.num_attention_heads ({self.num_attention_heads}) must be divisible by "
                f"num_key_value_heads ({self.num_key_value_heads}): each K/V head serves a whole group of query heads"
            )
        if self.position_embedding not in POSITION_EMBEDDINGS:
            raise ConfigError(
                f"{name}.position_embedding {self.position_embedding!r} is unknown; choose one of {POSITION_EMBEDDINGS}"
            )
        if self.position_embedding == "rope":
            if self.head_dim % 2:
                raise ConfigError(f"{name}.head_dim must be even for RoPE, got {self.head_dim}")
            if self.rope_type not in ROPE_TYPES:
                raise ConfigError(f"{name}.rope_type {self.rope_type!r} is unknown; choose one of {ROPE_TYPES}")
            if self.rope_theta <= 0 or self.rope_factor <= 0:
                raise ConfigError(f"{name}.rope_theta and rope_factor must be > 0")
