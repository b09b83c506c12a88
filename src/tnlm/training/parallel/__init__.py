"""Distributed training: the device mesh, FSDP2, tensor and sequence parallelism, and the trainer
and checkpoint state that go with them. `tnlm.training.parallelize` applies them in order.

    torchrun --nproc_per_node 4 -m tnlm train CONFIG parallel.dp_shard=2 parallel.tp=2
"""

from tnlm.training.parallel.fsdp import apply_fsdp
from tnlm.training.parallel.fused import fold_fused_projections
from tnlm.training.parallel.mesh import Layout, World, init_world, resolve_layout
from tnlm.training.parallel.sequence import SequenceParallelAttention, StateLink, split_batch
from tnlm.training.parallel.tensor import apply_tensor_parallel, check_tensor_parallel


def apply_sequence_parallel(model, world: World) -> None:
    """Every linear-attention layer passes its state along the sequence-parallel group."""
    from tnlm.layers.linear_attention import NormLinearAttention

    link = StateLink(world.group("sp"), rank=world.coordinate("sp"), size=world.size("sp"))
    for module in model.modules():
        if isinstance(module, NormLinearAttention):
            module.block_attn = SequenceParallelAttention(link)


__all__ = ["Layout", "World", "apply_fsdp", "apply_sequence_parallel", "apply_tensor_parallel",
           "check_tensor_parallel", "fold_fused_projections", "init_world", "resolve_layout", "split_batch"]
