"""parallelize(model, mesh, config): everything applied to a built model before training.

Applied from outside the model, in torchtitan's order: tensor parallelism, activation checkpointing,
compile, data-parallel sharding. In one process (mesh None) only the middle two apply; the distributed
trainer adds the mesh-dependent steps here. Both steps change the modules in place and keep every
parameter name, so checkpoints and `save_pretrained` see the plain model.
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


def parallelize(model: nn.Module, mesh: object | None, config: TrainConfig) -> nn.Module:
    """The model ready to train: `mesh` is the device mesh (None: one process, no sharding)."""
    if mesh is not None:
        raise ConfigError("this trainer runs in one process; distributed meshes are not supported yet")
    if config.train.activation_checkpointing:
        apply_activation_checkpointing(model)
    if config.train.compile:
        for block in blocks(model):
            block.compile()
    return model


def apply_activation_checkpointing(model: nn.Module) -> None:
    """Recompute each block's activations in the backward pass instead of keeping them: the block's
    forward runs inside a non-reentrant `torch.utils.checkpoint` (the form that composes with FSDP2 and,
    traced whole, with torch.compile); the module tree and parameter names stay as they were."""
    for block in blocks(model):
        block.forward = functools.partial(_checkpointed, block.forward)


def _checkpointed(forward, *args, **kwargs):
    return checkpoint(forward, *args, use_reentrant=False, **kwargs)


def supports_packed_documents(model: nn.Module) -> bool:
    """Whether the model takes `cu_seqlens` (documents packed in one row): its decoder says so."""
    return bool(getattr(getattr(model, "model", None), "supports_packed_documents", False))
