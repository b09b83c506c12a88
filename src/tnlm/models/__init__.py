"""Model families as Hugging Face classes, the decoder and causal-LM classes they share, and the
preset registry (create_model, load_config)."""

from tnlm.models.causal_lm import DecoderForCausalLM, causal_lm_loss, param_groups
from tnlm.models.decoder import DecoderModel, LayerCache, LayerInputs
from tnlm.models.registry import create_model, load_config, meta_model, preset_names

__all__ = [
    "DecoderForCausalLM", "DecoderModel", "LayerCache", "LayerInputs", "causal_lm_loss", "create_model",
    "load_config", "meta_model", "param_groups", "preset_names",
]  # fmt: skip
