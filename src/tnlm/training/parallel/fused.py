"""Fused projections: one nn.Linear whose output is several projections side by side.

TransNormer's `qkvu_proj` computes q, k, v and the output gate u in one product, its weight (4 h, d)
as the released checkpoints store it. Tensor parallelism must give each process its heads of every
part, rows that are not one contiguous block of (4 h, d); FSDP2 and torch.distributed.checkpoint need
every shard to be a box. Viewed as (4, h, d) the same weight shards into boxes along any dimension,
so in a distributed run the projection becomes a `FusedLinear` holding that view under the same
name, and checkpoints always store fused weights in this (parts, n, d) form (`canonical_views` gives
a plain model's tensors the same shape, without copying).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# module-name suffix -> number of side-by-side projections
FUSED_PROJECTIONS = {"token_mixer.qkvu_proj": 4}


class FusedLinear(nn.Module):
    """y = x W^T + b with W kept as (parts, n, in) and b as (parts, n): `parts` projections of width n
    whose outputs are concatenated, part after part, exactly as the nn.Linear it replaces."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.parts, self.in_features = weight.shape[0], weight.shape[2]
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None

    @classmethod
    def fold(cls, linear: nn.Linear, parts: int) -> FusedLinear:
        weight = linear.weight.detach().view(parts, -1, linear.in_features)
        bias = None if linear.bias is None else linear.bias.detach().view(parts, -1)
        return cls(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = _flat(self.weight), _flat(self.bias)
        return F.linear(x, w, b)


def _flat(t: torch.Tensor | None) -> torch.Tensor | None:
    """(parts, n, ...) -> (parts * n, ...). Under tensor parallelism t is a DTensor sharded along n:
    this process's rows of each part, flattened, are its shard of the projection's output."""
    if t is None:
        return None
    from torch.distributed.tensor import DTensor, Shard

    if isinstance(t, DTensor):
        local = t.to_local().flatten(0, 1)
        return DTensor.from_local(local, t.device_mesh, [Shard(0)], run_check=False)
    return t.flatten(0, 1)


def fold_fused_projections(model: nn.Module) -> None:
    """Replace every fused nn.Linear by a FusedLinear over the same tensors (names unchanged)."""
    for name, module in list(model.named_modules()):
        parts = _parts(name)
        if parts and isinstance(module, nn.Linear):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, FusedLinear.fold(module, parts))


def _parts(module_name: str) -> int:
    return next((n for suffix, n in FUSED_PROJECTIONS.items() if module_name.endswith(suffix)), 0)


def fused_shapes(model: nn.Module) -> dict[str, int]:
    """Parameter name -> parts, for the fused projections of a plain (unfolded) model."""
    out = {}
    for name, module in model.named_modules():
        parts = _parts(name)
        if parts and isinstance(module, nn.Linear):
            out[f"{name}.weight"] = parts
            if module.bias is not None:
                out[f"{name}.bias"] = parts
    return out


def canonical_views(tensors: dict[str, torch.Tensor], fused: dict[str, int]) -> dict[str, torch.Tensor]:
    """`tensors` (parameter name -> tensor) with every fused tensor of a plain model viewed as
    (parts, n, ...): the form checkpoints store. Views share storage, so loading into them loads the model."""
    out = dict(tensors)
    for name, parts in fused.items():
        if name in out and isinstance(out[name], torch.Tensor):
            out[name] = out[name].view(parts, -1, *out[name].shape[1:])
    return out
