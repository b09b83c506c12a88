"""TransnormerConfig: the official field names and defaults, so a released config.json loads unchanged."""

from __future__ import annotations

from transformers import PreTrainedConfig

from tnlm.layers.activations import FEATURE_MAPS


class TransnormerConfig(PreTrainedConfig):
    model_type = "transnormer"
    keys_to_ignore_at_inference = ["past_key_values", "cache"]

    def __init__(
        self,
        *,
        vocab_size: int = 64000,
        decoder_embed_dim: int = 1024,
        decoder_layers: int = 24,
        decoder_attention_heads: int = 8,
        hidden_dim: int = 1024,
        glu_dim: int = 2816,
        linear_use_lrpe_list: list[int] | None = None,
        linear_act_fun: str = "silu",
        no_scale_embedding: bool = False,
        norm_type: str = "simplermsnorm",
        bias: bool = False,
        init_std: float = 0.02,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | None = 2,
        tie_word_embeddings: bool = True,
        **kwargs,  # PreTrainedConfig's own fields and the official extras (auto_map, add_bos_token, ...)
    ) -> None:
        self.vocab_size = vocab_size
        self.decoder_embed_dim = decoder_embed_dim
        self.decoder_layers = decoder_layers
        self.decoder_attention_heads = decoder_attention_heads
        self.hidden_dim = hidden_dim
        self.glu_dim = decoder_embed_dim if glu_dim == -1 else glu_dim
        self.linear_use_lrpe_list = list(linear_use_lrpe_list) if linear_use_lrpe_list else []
        self.linear_act_fun = linear_act_fun
        self.no_scale_embedding = no_scale_embedding
        self.norm_type = norm_type
        self.bias = bias
        self.init_std = init_std
        self.use_cache = use_cache
        # released configs point `auto_map` at remote code; tnlm's own classes replace it
        kwargs.pop("auto_map", None)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
        self.validate_shapes()

    # generic names used by Hugging Face utilities and by tnlm's family-independent code
    @property
    def hidden_size(self) -> int:
        return self.decoder_embed_dim

    @property
    def num_hidden_layers(self) -> int:
        return self.decoder_layers

    @property
    def num_attention_heads(self) -> int:
        return self.decoder_attention_heads

    @property
    def initializer_range(self) -> float:
        return self.init_std

    @property
    def head_dim(self) -> int:
        return self.hidden_dim // self.decoder_attention_heads

    def use_lrpe(self, layer_idx: int) -> bool:
        flags = self.linear_use_lrpe_list
        return bool(flags[layer_idx]) if layer_idx < len(flags) else False

    def validate_shapes(self) -> None:
        """Raise a ValueError that names the field to fix."""
        for name in ("vocab_size", "decoder_embed_dim", "decoder_layers", "decoder_attention_heads", "hidden_dim", "glu_dim"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TransnormerConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.hidden_dim % self.decoder_attention_heads:
            raise ValueError(
                f"hidden_dim ({self.hidden_dim}) must be divisible by decoder_attention_heads "
                f"({self.decoder_attention_heads})"
            )
        if len(self.linear_use_lrpe_list) > self.decoder_layers:
            raise ValueError(
                f"linear_use_lrpe_list has {len(self.linear_use_lrpe_list)} flags for {self.decoder_layers} layers"
            )
        if self.linear_act_fun not in FEATURE_MAPS:
            raise ValueError(f"linear_act_fun {self.linear_act_fun!r} is unknown; choose one of {sorted(FEATURE_MAPS)}")
