"""Tensor parallelism: one DTensor plan per family, applied to the blocks from outside the model.

Megatron's pairing in every block: the projections into the heads (and into the feed-forward width)
are column-parallel, each process computing its slice of heads from the whole input; the projections
back out are row-parallel, their partial sums added across the tensor-parallel group. The activations
between the two stay plain local tensors, so the attention ops run unchanged on the local heads.

    TransNormer   q, k, v, u (the fused qkvu_proj) by heads | out_proj rows | SGLU l1, l2 | l3 rows
                  SRMSNorm over the full width: its sum of squares is added across the group
                  LRPE frequencies (H, 1, hd) and decay slopes: the local heads
    Transformer   q_proj, k_proj, v_proj by heads (GQA: kv heads divisible by tp) | o_proj rows
    and Infini    SwiGLU gate_proj, up_proj | down_proj rows; Infini's gate and memory: local heads

Embeddings, norm weights and the head are not split: they become DTensors replicated over the group
(`ReplicateParallel`), computed on local tensors, so that every parameter the optimizer and FSDP2 see
lives on the same mesh. Where a layer must know it is sharded, it says so in one method:
`shard_heads(rank, parts)`.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel, parallelize_module

from tnlm.errors import ConfigError
from tnlm.layers.norm import RMSNorm, SRMSNorm
from tnlm.ops.norm import srms_norm_reference
from tnlm.training.parallel.fused import FusedLinear


class FusedColwiseParallel(ColwiseParallel):
    """ColwiseParallel for a FusedLinear: every part is split along its own width (dimension 1 of the
    (parts, n, in) weight), so each process computes its slice of each part."""

    def _partition(self, name: str, module: nn.Module, mesh) -> None:
        for pname, param in list(module.named_parameters(recurse=False)):
            placed = distribute_tensor(param, mesh, [Shard(1)], src_data_rank=self.src_data_rank)
            module.register_parameter(pname, nn.Parameter(placed, requires_grad=param.requires_grad))

    def _apply(self, module: nn.Module, device_mesh) -> nn.Module:
        if not isinstance(module, FusedLinear):
            raise ConfigError(f"FusedColwiseParallel shards a FusedLinear, not {type(module).__name__}")
        return distribute_module(
            module, device_mesh, self._partition,
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output),
        )  # fmt: skip


class ReplicateParallel(ParallelStyle):
    """The module's parameters become DTensors replicated over the group; its inputs are viewed as
    replicated DTensors and its outputs handed back as local tensors. Nothing is communicated: each
    process computes the same thing, and the gradients agree because the inputs' gradients do."""

    def _apply(self, module: nn.Module, device_mesh) -> nn.Module:
        return distribute_module(module, device_mesh, _replicate_params, _replicated_inputs, _local_outputs)


def _replicate_params(name: str, module: nn.Module, mesh) -> None:
    for pname, param in list(module.named_parameters(recurse=False)):
        if not isinstance(param, DTensor):  # a tied weight may already be placed
            placed = distribute_tensor(param.detach(), mesh, [Replicate()])
            module.register_parameter(pname, nn.Parameter(placed, requires_grad=param.requires_grad))


def _replicated_inputs(module: nn.Module, inputs: tuple, mesh) -> tuple:
    return tuple(DTensor.from_local(x, mesh, [Replicate()], run_check=False) if isinstance(x, torch.Tensor)
                 and not isinstance(x, DTensor) else x for x in inputs)  # fmt: skip


def _local_outputs(module: nn.Module, outputs, mesh):
    return outputs.to_local() if isinstance(outputs, DTensor) else outputs


REPLICABLE = (nn.Embedding, nn.Linear, nn.LayerNorm, RMSNorm)


class TensorParallelSRMSNorm(SRMSNorm):
    """SRMSNorm of a tensor whose last dimension is split across the tensor-parallel group: the mean of
    squares is taken over the full width (a DTensor reduction: the partial sums are all-reduced, and
    the backward follows), so every process gets exactly its slice of the single-process result."""

    def __init__(self, eps: float, mesh) -> None:
        super().__init__(eps)
        self.mesh = mesh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = DTensor.from_local(x, self.mesh, [Shard(x.dim() - 1)], run_check=False)
        return srms_norm_reference(full, self.eps).to_local()


def distribute_parameter(module: nn.Module, name: str, mesh, dim: int) -> None:
    """Make module.<name> a DTensor sharded along `dim` (a per-head vector or table)."""
    param = getattr(module, name)
    placed = distribute_tensor(param.detach(), mesh, [Shard(dim)])
    module.register_parameter(name, nn.Parameter(placed, requires_grad=param.requires_grad))


def check_tensor_parallel(config, tp: int) -> None:
    """Clear errors for a model its tensor-parallel size cannot split, before anything is sharded."""
    if tp == 1:
        return
    name = config.model_type
    heads = {"query heads": config.num_attention_heads}
    if name == "transnormer":
        heads["SGLU width (glu_dim)"] = config.glu_dim
        if config.norm_type != "simplermsnorm":
            raise ConfigError(f"tensor parallelism needs norm_type simplermsnorm (a LayerNorm over the sharded "
                              f"attention output is not implemented); this model has {config.norm_type}")  # fmt: skip
    else:
        heads["key/value heads"] = config.num_key_value_heads
        heads["MLP width (intermediate_size)"] = config.intermediate_size
    for what, n in heads.items():
        if n % tp:
            raise ConfigError(f"parallel.tp={tp} cannot split this {name} model: its {n} {what} are not "
                              f"divisible by {tp}; choose a tp that divides {n}")  # fmt: skip


def apply_tensor_parallel(model: nn.Module, mesh, blocks: nn.ModuleList) -> None:
    """Shard every block of `model` over the 1-D tensor-parallel `mesh` (the family's plan)."""
    check_tensor_parallel(model.config, mesh.size())
    plan = PLANS.get(model.config.model_type)
    if plan is None:
        raise ConfigError(f"no tensor-parallel plan for {model.config.model_type} models")
    for block in blocks:
        plan(block, mesh)
    _replicate_the_rest(model, mesh)


def _replicate_the_rest(model: nn.Module, mesh) -> None:
    """Every parameter the plan did not shard is replicated; a tied head keeps sharing its embedding's."""
    tied = model.get_output_embeddings() if getattr(model.config, "tie_word_embeddings", False) else None
    for name, module in list(model.named_modules()):
        own = [p for p in module.parameters(recurse=False) if not isinstance(p, DTensor)]
        if not own:
            continue
        if not isinstance(module, REPLICABLE):
            raise ConfigError(f"tensor parallelism has no placement for the parameters of {name} "
                              f"({type(module).__name__})")  # fmt: skip
        if module is tied:
            module.weight = model.get_input_embeddings().weight
        parallelize_module(module, mesh, ReplicateParallel())


def _transnormer_block(block: nn.Module, mesh) -> None:
    mixer = block.token_mixer
    if not isinstance(mixer.qkvu_proj, FusedLinear):
        raise ConfigError("tensor parallelism needs the fused qkvu projection folded first (fold_fused_projections)")
    parallelize_module(block, mesh, {
        "token_mixer.qkvu_proj": FusedColwiseParallel(),
        "token_mixer.out_proj": RowwiseParallel(),
        "channel_mixer.l1": ColwiseParallel(),
        "channel_mixer.l2": ColwiseParallel(),
        "channel_mixer.l3": RowwiseParallel(),
    })  # fmt: skip
    mixer.norm = TensorParallelSRMSNorm(mixer.norm.eps, mesh)
    if mixer.lrpe is not None:
        distribute_parameter(mixer.lrpe, "theta", mesh, 0)
    mixer.shard_heads(mesh.get_local_rank(), mesh.size())


def _transformer_block(block: nn.Module, mesh) -> None:
    attn = block.self_attn
    parallelize_module(block, mesh, {
        "self_attn.q_proj": ColwiseParallel(),
        "self_attn.k_proj": ColwiseParallel(),
        "self_attn.v_proj": ColwiseParallel(),
        "self_attn.o_proj": RowwiseParallel(),
        "mlp.gate_proj": ColwiseParallel(),
        "mlp.up_proj": ColwiseParallel(),
        "mlp.down_proj": RowwiseParallel(),
    })  # fmt: skip
    if isinstance(getattr(attn, "gate", None), nn.Parameter):  # Infini-attention: one gate per head
        distribute_parameter(attn, "gate", mesh, 0)
    attn.shard_heads(mesh.get_local_rank(), mesh.size())


PLANS = {"transnormer": _transnormer_block, "tnlm_transformer": _transformer_block, "tnlm_infini": _transformer_block}
