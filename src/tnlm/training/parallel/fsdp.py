"""FSDP2: parameters, gradients and optimizer states sharded over the data-parallel processes.

`fully_shard` on every block and then on the root (the embedding, final norm and head, and a tied
head with its embedding), as torchtitan does: a block's parameters are gathered just before its
forward (and again for its backward) and freed after. On GPUs in bf16, parameters are gathered and
used in bf16 while gradients are reduced in float32 (and the sharded float32 master copy is what the
optimizer updates). Gradients are summed, not averaged: the trainer already divides the loss by the
number of target tokens of all processes together, so any split of the batch trains the same model.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard


def apply_fsdp(model: nn.Module, mesh, *, blocks: nn.ModuleList, precision: str) -> None:
    """Shard `model` over the 1-D data-parallel `mesh` (its parameters may already be tensor-parallel
    DTensors on another mesh dimension: FSDP2 then shards their local part)."""
    policy = MixedPrecisionPolicy()
    if precision == "bf16":
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum
