"""tnlm: TransNormerLLM, its baselines, and the tools around them.

`import tnlm` is light (it imports neither torch nor transformers), so the `tnlm` command starts fast.
The model functions (`tnlm.create_model`, `load_config`, `meta_model`, `preset_names`) and the
subpackages (`tnlm.models`, `tnlm.generation`, `tnlm.data`, ...) load on first use. Importing
`tnlm.models`, which every model function does, registers tnlm's model families with transformers'
Auto classes: after `import tnlm.models`, `AutoModelForCausalLM.from_pretrained` loads tnlm directories.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_MODEL_FUNCTIONS = ("create_model", "load_config", "meta_model", "preset_names")
_SUBPACKAGES = ("chat_template", "data", "errors", "evaluation", "generation", "layers", "models", "ops")

__all__ = ["__version__", "create_model", "load_config", "meta_model", "preset_names"]

if TYPE_CHECKING:
    from tnlm.models import create_model, load_config, meta_model, preset_names


def __getattr__(name: str) -> Any:
    if name in _MODEL_FUNCTIONS:
        return getattr(importlib.import_module("tnlm.models"), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"tnlm.{name}")
    raise AttributeError(f"module 'tnlm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODEL_FUNCTIONS, *_SUBPACKAGES})
