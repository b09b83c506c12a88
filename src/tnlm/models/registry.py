"""Preset names -> configs, model creation from a preset or a directory, and Auto-class registration."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.checkpoint import load_weights, read_config_json
from tnlm.models.config import DecoderConfig
from tnlm.models.infini import InfiniConfig, InfiniForCausalLM
from tnlm.models.transformer import TransformerConfig, TransformerForCausalLM
from tnlm.models.transnormer import TransnormerConfig, TransnormerForCausalLM


@dataclass(frozen=True)
class Family:
    """A model family: its HF config and causal-LM classes."""

    config_class: type[DecoderConfig]
    model_class: type[PreTrainedModel]


@dataclass(frozen=True)
class Preset:
    family: Family
    config_kwargs: dict = field(default_factory=dict)
    description: str = ""

    def config(self, overrides: dict | None = None) -> DecoderConfig:
        self.family.config_class.check_overrides(overrides or {})
        return self.family.config_class(**{**self.config_kwargs, **(overrides or {})})


FAMILIES: dict[str, Family] = {}  # model_type -> Family
PRESETS: dict[str, Preset] = {}


def register_family(config_class: type[DecoderConfig], model_class: type[PreTrainedModel]) -> Family:
    family = Family(config_class, model_class)
    FAMILIES[config_class.model_type] = family
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
    return family


def register_preset(name: str, family: Family, description: str = "", **config_kwargs) -> None:
    PRESETS[name] = Preset(family, config_kwargs, description)


def _lrpe_first(layers: int) -> list[int]:
    return [1] + [0] * (layers - 1)


def _transnormer_preset(name: str, description: str, *, d: int, layers: int, heads: int, glu: int, **kw) -> None:
    register_preset(
        name, TRANSNORMER, description,
        decoder_embed_dim=d, hidden_dim=d, decoder_layers=layers, decoder_attention_heads=heads,
        glu_dim=glu, linear_use_lrpe_list=_lrpe_first(layers), **kw,
    )  # fmt: skip


TRANSNORMER = register_family(TransnormerConfig, TransnormerForCausalLM)
_transnormer_preset("tnl-tiny", "4 layers, d=128: trains on a laptop CPU in minutes", d=128, layers=4, heads=4, glu=352, vocab_size=8192)
_transnormer_preset("tnl-385m", "released TransNormerLLM-385M shape", d=1024, layers=24, heads=8, glu=2816)
_transnormer_preset("tnl-1b", "released TransNormerLLM-1B shape", d=2048, layers=16, heads=16, glu=5632)
_transnormer_preset("tnl-7b", "released TransNormerLLM-7B shape", d=4096, layers=30, heads=32, glu=11008)

# baselines: same width, depth, heads and FFN width (and tied embeddings) as the TransNormer presets
TRANSFORMER = register_family(TransformerConfig, TransformerForCausalLM)
INFINI = register_family(InfiniConfig, InfiniForCausalLM)
_TINY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=352, vocab_size=8192, tie_word_embeddings=True)
_385M = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=8, intermediate_size=2816, vocab_size=64000, tie_word_embeddings=True)
register_preset("transformer-tiny", TRANSFORMER, "LLaMA-style baseline in tnl-tiny's shape", **_TINY)
register_preset("transformer-385m", TRANSFORMER, "LLaMA-style baseline in tnl-385m's shape", **_385M)
register_preset("infini-tiny", INFINI, "Infini-attention baseline in tnl-tiny's shape, 64-token segments", segment_length=64, **_TINY)
register_preset("infini-385m", INFINI, "Infini-attention baseline in tnl-385m's shape, 2048-token segments", segment_length=2048, **_385M)


def _unknown_preset(name: str) -> ConfigError:
    return ConfigError(
        f"{name!r} is neither a preset nor a model directory. Presets: {', '.join(sorted(PRESETS))}. "
        "For a directory, pass a path that exists and holds config.json."
    )


def _looks_like_path(name: str) -> bool:
    return "/" in name or name.startswith(".") or Path(name).exists()


def _dir_config(path: Path, overrides: dict | None) -> DecoderConfig:
    """The config of a model directory: its config.json, read and checked once, here."""
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist; check the path, or use a preset: {', '.join(sorted(PRESETS))}")
    raw = read_config_json(path)
    model_type = raw.pop("model_type", None)
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"{path} holds a model of type {model_type!r}; tnlm loads {', '.join(sorted(FAMILIES))}. "
            "Convert it first (tnlm convert) or load it with transformers directly."
        )
    config_class = FAMILIES[model_type].config_class
    config_class.check_overrides(overrides or {})
    try:
        return config_class.from_dict({**raw, **(overrides or {})})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path / 'config.json'} is not a valid {model_type} config: {e}") from None


def load_config(name_or_dir: str | Path, *, overrides: dict | None = None) -> DecoderConfig:
    """The config of a preset name or of a model directory (its config.json). `overrides` replace
    fields; a key the family's config does not have is a ConfigError that lists the ones it has."""
    name = str(name_or_dir)
    if name in PRESETS:
        return PRESETS[name].config(overrides)
    if not _looks_like_path(name):
        raise _unknown_preset(name)
    return _dir_config(Path(name), overrides)


def create_model(
    name_or_dir: str | Path,
    *,
    overrides: dict | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    strict: bool = True,
) -> PreTrainedModel:
    """A model from a preset (random weights, training mode) or from a saved directory (its weights,
    eval mode). Weights are float32 unless `dtype` says otherwise. A directory whose weights lack a
    tensor the model needs, or hold one it has no place for, is refused unless strict=False."""
    config = load_config(name_or_dir, overrides=overrides)
    model_class = FAMILIES[config.model_type].model_class
    is_preset = str(name_or_dir) in PRESETS
    if is_preset:
        if seed is not None:
            torch.manual_seed(seed)
        model = model_class(config)
    else:
        # float32 unless asked: released configs say bfloat16, whose matmuls crawl on CPUs
        model = load_weights(model_class, Path(name_or_dir), config=config, dtype=dtype or torch.float32, strict=strict)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model if is_preset else model.eval()


def meta_model(name_or_dir: str | Path, *, overrides: dict | None = None) -> PreTrainedModel:
    """The model on the meta device: shapes and parameter counts without allocating memory."""
    config = load_config(name_or_dir, overrides=overrides)
    with torch.device("meta"):
        return FAMILIES[config.model_type].model_class(config)


def preset_names() -> list[str]:
    return sorted(PRESETS)

