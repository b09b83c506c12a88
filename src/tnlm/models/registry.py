"""Preset names -> configs, model creation from a preset or a directory, and Auto-class registration."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel

from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.infini import InfiniConfig, InfiniForCausalLM
from tnlm.models.transformer import TransformerConfig, TransformerForCausalLM
from tnlm.models.transnormer import TransnormerConfig, TransnormerForCausalLM


@dataclass(frozen=True)
class Family:
    """A model family: its HF config and causal-LM classes."""

    config_class: type[PreTrainedConfig]
    model_class: type[PreTrainedModel]


@dataclass(frozen=True)
class Preset:
    family: Family
    config_kwargs: dict = field(default_factory=dict)
    description: str = ""

    def config(self, overrides: dict | None = None) -> PreTrainedConfig:
        return self.family.config_class(**{**self.config_kwargs, **(overrides or {})})


FAMILIES: dict[str, Family] = {}  # model_type -> Family
PRESETS: dict[str, Preset] = {}


def register_family(config_class: type[PreTrainedConfig], model_class: type[PreTrainedModel]) -> Family:
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


def load_config(name_or_dir: str | Path, *, overrides: dict | None = None) -> PreTrainedConfig:
    """The config of a preset name or of a model directory (its config.json)."""
    name = str(name_or_dir)
    if name in PRESETS:
        return PRESETS[name].config(overrides)
    if not _looks_like_path(name):
        raise _unknown_preset(name)
    path = Path(name)
    if not path.is_dir():
        raise CheckpointError(f"model directory {path} does not exist; check the path, or use a preset: {', '.join(sorted(PRESETS))}")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json; it is not a model directory (save one with model.save_pretrained)")
    try:
        raw = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON ({e}); restore it from the original checkpoint") from None
    model_type = raw.get("model_type")
    if model_type not in FAMILIES:
        raise CheckpointError(
            f"{path} holds a model of type {model_type!r}; tnlm loads {', '.join(sorted(FAMILIES))}. "
            "Convert it first (tnlm convert) or load it with transformers directly."
        )
    family = FAMILIES[model_type]
    raw.pop("model_type", None)
    try:
        return family.config_class.from_dict({**raw, **(overrides or {})})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{cfg_file} is not a valid {model_type} config: {e}") from None


def _check_weight_shapes(path: Path, config: PreTrainedConfig) -> None:
    """Compare the safetensors header shapes with the config before loading anything."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        if any(path.glob("*.bin")):
            return  # PyTorch pickles: shapes are checked by from_pretrained itself
        raise CheckpointError(f"{path} has a config.json but no model.safetensors; the checkpoint is incomplete")
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in FAMILIES[config.model_type].model_class(config).state_dict().items()}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                if key in expected and tuple(f.get_slice(key).get_shape()) != expected[key]:
                    raise CheckpointError(
                        f"{file.name}: tensor {key} has shape {tuple(f.get_slice(key).get_shape())} but "
                        f"config.json implies {expected[key]}; the weights belong to a model of another size"
                    )


def create_model(
    name_or_dir: str | Path,
    *,
    overrides: dict | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
) -> PreTrainedModel:
    """A model from a preset (random weights, training mode) or from a saved directory (its weights,
    eval mode). Weights are float32 unless `dtype` says otherwise."""
    config = load_config(name_or_dir, overrides=overrides)
    model_class = FAMILIES[config.model_type].model_class
    if str(name_or_dir) in PRESETS:
        if seed is not None:
            torch.manual_seed(seed)
        model = model_class(config)
    else:
        path = Path(name_or_dir)
        _check_weight_shapes(path, config)
        # float32 unless asked: released configs say bfloat16, whose matmuls crawl on CPUs
        model = model_class.from_pretrained(path, config=config, dtype=dtype or torch.float32)
    if dtype is not None:
        model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    return model.eval() if str(name_or_dir) not in PRESETS else model


def meta_model(name_or_dir: str | Path, *, overrides: dict | None = None) -> PreTrainedModel:
    """The model on the meta device: shapes and parameter counts without allocating memory."""
    config = load_config(name_or_dir, overrides=overrides)
    with torch.device("meta"):
        return FAMILIES[config.model_type].model_class(config)


def preset_names() -> list[str]:
    return sorted(PRESETS)

