"""Feature maps applied to q and k by linear-attention layers, chosen by name in a config."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tnlm.errors import ConfigError

# Every map acts elementwise: NormLinearAttention applies one call to q and k side by side.
FEATURE_MAPS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "1+elu": lambda x: 1 + F.elu(x),
    "elu": F.elu,
    "exp": torch.exp,
    "none": lambda x: x,
}


def feature_map(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return FEATURE_MAPS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; choose one of {sorted(FEATURE_MAPS)}") from None
