"""Copy rows of a decoding cache: the context of a multiple-choice item is computed once and its
cache is repeated for every choice.

Each tnlm family keeps its own cache object (a per-layer list of tensors, KV buffers or Infini-attention
states, see tnlm.generation.state). This module does not import those classes: it walks the object and
takes rows of every tensor along the batch dimension, which is dimension 0 in every family's state.
A tensor whose first dimension is not the batch is refused, so a future cache layout fails loudly
instead of being copied wrongly.
"""

from __future__ import annotations

import copy

import torch

_SCALARS = (int, float, bool, str, bytes, type(None))


def select_cache_rows(cache: object, index: torch.Tensor, *, batch: int) -> object:
    """A new cache whose row r is row index[r] of `cache` (which holds `batch` rows).
    The result shares no tensor with the input, so either can be extended without touching the other."""

    def walk(obj: object) -> object:
        if isinstance(obj, torch.Tensor):
            if obj.dim() == 0 or obj.shape[0] != batch:
                raise TypeError(
                    f"cache tensor of shape {tuple(obj.shape)} has no batch dimension of size {batch} first; "
                    "this cache layout cannot be copied per choice (score with reuse_context=False)"
                )
            return obj.index_select(0, index.to(obj.device))
        if isinstance(obj, _SCALARS):
            return obj
        if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
            return type(obj)(*(walk(o) for o in obj))
        if isinstance(obj, (list, tuple)):
            return type(obj)(walk(o) for o in obj)
        if isinstance(obj, dict):
            return {k: walk(v) for k, v in obj.items()}
        if hasattr(obj, "__dict__"):
            new = copy.copy(obj)
            for key, value in vars(obj).items():
                object.__setattr__(new, key, walk(value))  # frozen dataclasses too
            return new
        raise TypeError(f"cannot copy a cache that holds a {type(obj).__name__}")

    return walk(cache)
