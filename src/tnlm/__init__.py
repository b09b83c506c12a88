"""tnlm: TransNormerLLM, its baselines, and the tools around them.

Importing tnlm registers its model families with transformers' Auto classes.
"""

__version__ = "0.1.0"

from tnlm.models import create_model, load_config, meta_model, preset_names  # noqa: E402  (registers Auto classes)

__all__ = ["__version__", "create_model", "load_config", "meta_model", "preset_names"]
