"""Checkpoint state that any process layout can reload.

torch.distributed.checkpoint stores each tensor under its parameter name, shard by shard, and loads
whichever shards a process needs, so a checkpoint of 2-way FSDP reloads in one process or under 2-way
tensor parallelism. What must be made layout-free first:

- model and optimizer: keyed by parameter name (torch.distributed.checkpoint.state_dict's form), with
  fused projections in their (parts, n, ...) form (see fused.py);
- the data loader's position: data-parallel processes each read batch_size / dp rows of the same
  global batch, so the position is stored for the global batch and mapped back to each process's loader.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)  # fmt: skip

from tnlm.errors import CheckpointError
from tnlm.training.parallel.fused import canonical_views, fused_shapes


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> tensor (a DTensor when sharded), fused projections as (parts, n, ...)."""
    return canonical_views(get_model_state_dict(model), fused_shapes(model))


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` (the form of `model_state`) into the model; an in-place load has nothing to copy."""
    target = model_state(model)
    missing, unexpected = sorted(set(target) - set(state)), sorted(set(state) - set(target))
    if missing or unexpected:
        raise CheckpointError(f"the checkpoint does not fit this model: missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}")  # fmt: skip
    with torch.no_grad():
        for name, tensor in target.items():
            source = state[name]
            if source is not tensor:
                if tuple(source.shape) != tuple(tensor.shape):
                    raise CheckpointError(f"the checkpoint's {name} has shape {tuple(source.shape)}, this model's "
                                          f"{tuple(tensor.shape)}")  # fmt: skip
                tensor.copy_(source)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter name (created, zero, if no step was taken yet, so
    that a checkpoint can be loaded into it in place)."""
    state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(flatten_optimizer_state_dict=True))
    fused = fused_shapes(model)
    return {key: _canonical_entry(key, value, fused) for key, value in state.items()}


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    params = dict(model.named_parameters())
    plain = {}
    for key, value in state.items():
        name = _param_of(key)
        if isinstance(value, torch.Tensor) and name in params and value.dim() > 0:
            value = value.view(params[name].shape)
        plain[key] = value
    set_optimizer_state_dict(model, optimizer, plain, options=StateDictOptions(flatten_optimizer_state_dict=True))


def _param_of(key: str) -> str:
    """'state.model.layers.0.x.weight.exp_avg' -> 'model.layers.0.x.weight' (flattened optimizer keys)."""
    if not key.startswith("state."):
        return ""
    return key.removeprefix("state.").rpartition(".")[0]


def _canonical_entry(key: str, value: Any, fused: dict[str, int]) -> Any:
    name = _param_of(key)
    if name in fused and isinstance(value, torch.Tensor) and value.dim() > 0:
        return value.view(fused[name], -1, *value.shape[1:])
    return value


LOADER_LAYOUT = ("rank", "world_size", "batch_size")


def portable_loader_state(state: dict[str, Any]) -> dict[str, Any]:
    """A TokenLoader position in terms of the global batch (any other loader's state as it is)."""
    config = state.get("config")
    if not isinstance(config, dict) or not all(k in config for k in LOADER_LAYOUT):
        return state
    shared = {k: v for k, v in config.items() if k not in LOADER_LAYOUT}
    return {**state, "config": {**shared, "global_batch_size": config["batch_size"] * config["world_size"]}}


def local_loader_state(state: dict[str, Any], local: dict[str, Any]) -> dict[str, Any]:
    """The portable position `state` for this process's loader, whose own state is `local`; the loader
    itself refuses a position from other data settings."""
    config, mine = state.get("config"), local.get("config")
    if not isinstance(config, dict) or "global_batch_size" not in config or not isinstance(mine, dict):
        return state
    global_batch = mine["batch_size"] * mine["world_size"]
    if config["global_batch_size"] != global_batch:
        return {**state, "config": {**config, "batch_size": config["global_batch_size"]}}
    shared = {k: v for k, v in config.items() if k != "global_batch_size"}
    return {**state, "config": {**shared, **{k: mine[k] for k in LOADER_LAYOUT}}}
