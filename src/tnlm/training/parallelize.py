"""parallelize(model, world, config): everything applied to a built model before training.

Applied from outside the model, in torchtitan's order: tensor parallelism, sequence parallelism,
activation checkpointing, compile, data-parallel sharding (FSDP2). In one process (`world` None or
without a mesh) only the middle two apply. Every step changes the modules in place and keeps every
parameter name, so checkpoints and `save_pretrained` see the plain model's names.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint

from tnlm.errors import ConfigError
from tnlm.training.config import TrainConfig


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder's residual blocks (every family keeps them in `model.model.layers`)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise ConfigError(f"{type(model).__name__} has no model.layers: activation checkpointing and "
                          "compilation need a tnlm decoder")  # fmt: skip
    return layers


def parallelize(model: nn.Module, world, config: TrainConfig, *, precision: str = "float32") -> nn.Module:
    """The model ready to train. `world` (tnlm.training.parallel.World, or None for one process) says
    how the processes share the work; `precision` is the run's (bf16: FSDP2 gathers bf16 parameters)."""
    distributed = world is not None and world.distributed
    if distributed:
        from tnlm.training.parallel import apply_sequence_parallel, apply_tensor_parallel, fold_fused_projections

        check_parallel_support(model, world, config)
        fold_fused_projections(model)
        if world.size("tp") > 1:
            apply_tensor_parallel(model, world.dims["tp"], blocks(model))
        if world.size("sp") > 1:
            apply_sequence_parallel(model, world)
    if config.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if config.train.compile:
        warm_caches(model)
        for block in blocks(model):
            block.compile()
    if distributed and world.size("dp_sp") > 1:
        from tnlm.training.parallel import apply_fsdp

        apply_fsdp(model, world.dims["dp_sp"], blocks=blocks(model), precision=precision)
    return model


def check_parallel_support(model: nn.Module, world, config: TrainConfig) -> None:
    """What the model and the run settings allow, checked before anything is sharded (on every
    process alike, so a refusal never leaves one process waiting for another)."""
    from tnlm.training.parallel import check_tensor_parallel

    check_tensor_parallel(model.config, world.size("tp"))
    if world.size("sp") > 1:
        if model.config.model_type != "transnormer":
            raise ConfigError(f"parallel.sp={world.size('sp')}: sequence parallelism passes a linear-attention "
                              f"state between processes, which {model.config.model_type} models do not have "
                              "(softmax attention needs every key); use parallel.dp_shard or parallel.tp")  # fmt: skip
        if config.train.compile:
            raise ConfigError("parallel.sp > 1 does not combine with train.compile: the state exchange between "
                              "processes cannot be traced; turn train.compile off")  # fmt: skip


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them: the block's
    forward runs inside a non-reentrant `torch.utils.checkpoint` (the form that composes with FSDP2 and,
    traced whole, with torch.compile); the module tree and parameter names stay as they were."""
    for block in blocks(model):
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def warm_caches(model: nn.Module) -> None:
    """Fill the per-device tables layers compute on first use (decay rates, RoPE frequencies, ALiBi
    slopes) before compiling: filling them inside a checkpointed, compiled block is a side effect that
    breaks the graph."""
    from tnlm.layers.linear_attention import NormLinearAttention
    from tnlm.layers.positions import Alibi, Rotary

    device = next(model.parameters()).device
    for module in model.modules():
        if isinstance(module, NormLinearAttention):
            module.log_decay(device)
        elif isinstance(module, Rotary):
            module.inv_freq(device)
        elif isinstance(module, Alibi):
            module.slopes(device)


def supports_packed_documents(model: nn.Module) -> bool:
    """Whether the model takes `cu_seqlens` (documents packed in one row): its decoder says so."""
    return bool(getattr(getattr(model, "model", None), "supports_packed_documents", False))
