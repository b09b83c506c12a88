"""Model families (Hugging Face classes) and the preset registry."""

from tnlm.models.registry import create_model, load_config, meta_model, preset_names

__all__ = ["create_model", "load_config", "meta_model", "preset_names"]
