"""TransnormerConfig: the official field names and defaults, so a released config.json loads unchanged.

Two fields are tnlm's own, for the TransNormerLLM paper's ablations; their defaults are what the
released models compute, and a config.json without them loads as before: `use_decay` (False: no
exponential decay, lambda = 1) and `glu_act` (an activation on the channel mixer's first branch:
"none" is SGLU, "silu" the GLU it replaced). `norm_type` also takes "rmsnorm" (RMSNorm with a weight),
the paper's other normalisation ablation.
"""

from __future__ import annotations

from tnlm.errors import ConfigError
from tnlm.layers.activations import FEATURE_MAPS
from tnlm.layers.norm import NORM_TYPES
from tnlm.models.config import BOOL, POSITIVE, POSITIVE_INT, DecoderConfig, Rule, one_of

LRPE_FLAGS = Rule(
    "a list of 0/1 flags, one per layer (1: LRPE on that layer)",
    lambda v: isinstance(v, list) and all(type(f) in (int, bool) and f in (0, 1) for f in v),
)


class TransnormerConfig(DecoderConfig):
    model_type = "transnormer"
    RULES = {
        "vocab_size": POSITIVE_INT, "decoder_embed_dim": POSITIVE_INT, "decoder_layers": POSITIVE_INT,
        "decoder_attention_heads": POSITIVE_INT, "hidden_dim": POSITIVE_INT, "glu_dim": POSITIVE_INT,
        "linear_use_lrpe_list": LRPE_FLAGS, "linear_act_fun": one_of(*FEATURE_MAPS), "no_scale_embedding": BOOL,
        "norm_type": one_of(*NORM_TYPES), "bias": BOOL, "init_std": POSITIVE, "use_decay": BOOL,
        "glu_act": one_of(*FEATURE_MAPS),
    }  # fmt: skip

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
        use_decay: bool = True,
        glu_act: str = "none",
        tie_word_embeddings: bool = True,
        **kwargs,  # DecoderConfig's fields (use_cache, special token ids) and the official extras (add_bos_token, ...)
    ) -> None:
        self.vocab_size = vocab_size
        self.decoder_embed_dim = decoder_embed_dim
        self.decoder_layers = decoder_layers
        self.decoder_attention_heads = decoder_attention_heads
        self.hidden_dim = hidden_dim
        self.glu_dim = decoder_embed_dim if glu_dim == -1 else glu_dim
        flags = [] if linear_use_lrpe_list is None else linear_use_lrpe_list
        self.linear_use_lrpe_list = list(flags) if isinstance(flags, tuple) else flags
        self.linear_act_fun = linear_act_fun
        self.no_scale_embedding = no_scale_embedding
        self.norm_type = norm_type
        self.bias = bias
        self.init_std = init_std
        self.use_decay = use_decay
        self.glu_act = glu_act
        # released configs point `auto_map` at remote code; tnlm's own classes replace it
        kwargs.pop("auto_map", None)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)

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

    def check_consistency(self) -> None:
        if self.hidden_dim % self.decoder_attention_heads:
            raise ConfigError(
                f"TransnormerConfig.hidden_dim ({self.hidden_dim}) must be divisible by decoder_attention_heads "
                f"({self.decoder_attention_heads})"
            )
        if len(self.linear_use_lrpe_list) > self.decoder_layers:
            raise ConfigError(
                f"TransnormerConfig.linear_use_lrpe_list has {len(self.linear_use_lrpe_list)} flags for "
                f"{self.decoder_layers} layers; give at most one per layer"
            )
