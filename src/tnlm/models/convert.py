"""Conversion between tnlm's Transformer family and Hugging Face `LlamaForCausalLM`.

The two share parameter names (q_proj ... down_proj, input_layernorm, model.norm, lm_head) and maths
(rotate-half RoPE, RMSNorm in float32, SwiGLU, grouped K/V heads), so weights copy one to one; what
converts is the configuration, RoPE scaling above all. What one side cannot express raises a
ConfigError: ALiBi and static NTK scaling have no Llama form, and Llama's dynamic / YaRN / LongRoPE
scalings have no tnlm form.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.initialization import no_init_weights

from tnlm.errors import CheckpointError, ConfigError
from tnlm.fsutil import follow_umask
from tnlm.models.checkpoint import load_weights, read_config_json
from tnlm.models.transformer import TransformerConfig, TransformerForCausalLM

# RoPE types with the same meaning on both sides; tnlm's "ntk" is static, Llama's "dynamic" is not
_SHARED_ROPE_TYPES = ("default", "linear", "llama3")
_SHARED_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "max_position_embeddings", "rms_norm_eps", "attention_bias", "mlp_bias",
    "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
)  # fmt: skip
# files a model directory carries besides config and weights, copied as they are
_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
               "generation_config.json", "chat_template.jinja")  # fmt: skip


def _llama_rope_to_tnlm(rope: dict) -> dict:
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _SHARED_ROPE_TYPES:
        raise ConfigError(
            f"Llama rope_type {rope_type!r} has no tnlm equivalent; tnlm converts {', '.join(_SHARED_ROPE_TYPES)}"
        )
    out = {"rope_type": rope_type, "rope_theta": float(rope.get("rope_theta", 10000.0))}
    if rope_type != "default":
        out["rope_factor"] = float(rope["factor"])
    if rope_type == "llama3":
        out["rope_low_freq_factor"] = float(rope["low_freq_factor"])
        out["rope_high_freq_factor"] = float(rope["high_freq_factor"])
        out["rope_original_max_position_embeddings"] = int(rope["original_max_position_embeddings"])
    return out


def _tnlm_rope_to_llama(cfg: TransformerConfig) -> dict:
    if cfg.position_embedding != "rope":
        raise ConfigError(
            f"position_embedding {cfg.position_embedding!r} has no LlamaForCausalLM form (Llama uses RoPE)"
        )
    if cfg.rope_type not in _SHARED_ROPE_TYPES:
        raise ConfigError(
            f"rope_type {cfg.rope_type!r} has no LlamaForCausalLM form (Llama's 'dynamic' rescales with the "
            f"sequence length); convertible: {', '.join(_SHARED_ROPE_TYPES)}"
        )
    rope = {"rope_type": cfg.rope_type, "rope_theta": float(cfg.rope_theta)}
    if cfg.rope_type != "default":
        rope["factor"] = float(cfg.rope_factor)
    if cfg.rope_type == "llama3":
        rope.update(low_freq_factor=cfg.rope_low_freq_factor, high_freq_factor=cfg.rope_high_freq_factor,
                    original_max_position_embeddings=cfg.rope_original_max_position_embeddings)  # fmt: skip
    return rope


def llama_config_to_tnlm(cfg: LlamaConfig) -> TransformerConfig:
    """The TransformerConfig of a LlamaConfig; raises ConfigError for what tnlm cannot express."""
    if getattr(cfg, "hidden_act", "silu") != "silu":
        raise ConfigError(f"Llama hidden_act {cfg.hidden_act!r}: tnlm's SwiGLU uses silu")
    if (getattr(cfg, "pretraining_tp", 1) or 1) > 1:
        raise ConfigError("Llama pretraining_tp > 1 computes the head in slices; convert with pretraining_tp=1")
    rope = cfg.rope_parameters or {"rope_type": "default", "rope_theta": 10000.0}
    fields = {name: getattr(cfg, name) for name in _SHARED_FIELDS}
    return TransformerConfig(position_embedding="rope", **_llama_rope_to_tnlm(dict(rope)), **fields)


def tnlm_config_to_llama(cfg: TransformerConfig) -> LlamaConfig:
    """The LlamaConfig of a TransformerConfig; raises ConfigError for ALiBi and static NTK scaling."""
    if type(cfg) is not TransformerConfig:
        raise ConfigError(f"only the Transformer family converts to Llama, not {cfg.model_type!r}")
    fields = {name: getattr(cfg, name) for name in _SHARED_FIELDS}
    return LlamaConfig(hidden_act="silu", rope_parameters=_tnlm_rope_to_llama(cfg), **fields)


def _rebuild(cls: type[PreTrainedModel], config: PreTrainedConfig, src: PreTrainedModel) -> PreTrainedModel:
    with no_init_weights():  # every weight is overwritten below
        out = cls(config)
    out = out.to(device=src.device, dtype=src.dtype)
    missing, unexpected = out.load_state_dict(src.state_dict(), strict=False)  # same names on both sides
    if missing or unexpected:
        raise CheckpointError(f"weights do not map one to one: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if config.tie_word_embeddings:
        out.tie_weights()
    return out.eval()


def llama_to_tnlm(model: LlamaForCausalLM) -> TransformerForCausalLM:
    """A TransformerForCausalLM with the weights of a LlamaForCausalLM (same dtype)."""
    return _rebuild(TransformerForCausalLM, llama_config_to_tnlm(model.config), model)


def tnlm_to_llama(model: TransformerForCausalLM) -> LlamaForCausalLM:
    """A LlamaForCausalLM with the weights of a TransformerForCausalLM (same dtype)."""
    return _rebuild(LlamaForCausalLM, tnlm_config_to_llama(model.config), model)


_SOURCE_CLASSES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    TransformerConfig.model_type: (TransformerConfig, TransformerForCausalLM),
}


def _load_source(src: Path, raw: dict, *, strict: bool) -> PreTrainedModel:
    """The source model in its own dtype; its config class checks the fields of config.json."""
    config_class, model_class = _SOURCE_CLASSES[raw["model_type"]]
    try:
        config = config_class.from_dict({k: v for k, v in raw.items() if k != "model_type"})
    except (TypeError, ValueError, StrictDataclassError) as e:
        raise CheckpointError(f"{src / 'config.json'} is not a valid {raw['model_type']} config: {e}") from None
    return load_weights(model_class, src, config=config, dtype="auto", strict=strict)


def convert_checkpoint(
    src: str | Path, dst: str | Path, *, to: str | None = None, overwrite: bool = False, strict: bool = True
) -> str:
    """Convert a model directory: Llama -> tnlm or tnlm Transformer -> Llama (`to` = "tnlm" / "llama",
    by default the other one). Writes to a temporary directory beside `dst`, then renames, so a failed
    conversion leaves nothing half-written. A source whose weights lack a tensor, or hold one the model
    has no place for, is refused unless strict=False. Returns the target format."""
    src, dst = Path(src), Path(dst)
    raw = read_config_json(src)
    if dst.exists() and (not overwrite or not dst.is_dir()):
        raise CheckpointError(f"{dst} already exists; choose a new directory or pass --overwrite")
    model_type = raw.get("model_type", "")
    source = {"llama": "llama", TransformerConfig.model_type: "tnlm"}.get(model_type)
    if source is None:
        raise CheckpointError(
            f"{src} holds a {model_type!r} model; tnlm converts 'llama' <-> '{TransformerConfig.model_type}'"
        )
    to = to or ("tnlm" if source == "llama" else "llama")
    if to not in ("tnlm", "llama") or to == source:
        raise ConfigError(f"cannot convert a {source} checkpoint to {to!r}; the target must be the other format")
    model = _load_source(src, raw, strict=strict)
    converted = llama_to_tnlm(model) if source == "llama" else tnlm_to_llama(model)
    _save_atomically(converted, src, dst)
    return to


def _save_atomically(model: torch.nn.Module, src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", dir=dst.parent))
    follow_umask(tmp, directory=True)  # not mkdtemp's 0700 once renamed into place
    try:
        model.save_pretrained(tmp)
        for name in _SIDE_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        if dst.exists():
            shutil.rmtree(dst)
        tmp.rename(dst)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
