"""The trainer of a distributed run: the single-process Trainer with its totals summed over the
data-parallel and sequence-parallel processes, each process's share of the batch, and the gradient
norm over sharded gradients.

Every process of a tensor-parallel group computes the same loss from the same batch; the processes
along dp_shard and sp hold different tokens, so the number of target tokens, the loss and the token
count are summed over those ("dp_sp"). The loss each process back-propagates is its own sum divided
by the global number of targets, and FSDP2 sums the gradients: the gradient of one big batch.
"""

from __future__ import annotations

import math
from collections import defaultdict

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from tnlm.training.parallel.mesh import World
from tnlm.training.parallel.sequence import split_batch
from tnlm.training.trainer import Batch, Trainer


class DistributedTrainer(Trainer):
    def __init__(self, *, world: World, **kwargs) -> None:
        super().__init__(**kwargs)
        self.world = world

    def sum_over_processes(self, *values: float) -> tuple[float, ...]:
        totals = torch.tensor(values, dtype=torch.float64, device=self.world.device)
        dist.all_reduce(totals, group=self.world.group("dp_sp"))
        return tuple(type(v)(t) for v, t in zip(values, totals.tolist()))

    def local_share(self, batch: Batch) -> Batch:
        """Sequence parallelism: this process's slice of every sequence (the loader already gave this
        data-parallel process its rows)."""
        if self.world.size("sp") == 1:
            return batch
        return split_batch(batch, rank=self.world.coordinate("sp"), size=self.world.size("sp"))

    def clip_gradients(self, max_norm: float) -> float:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        norm = global_norm(grads)
        scale = min(max_norm / (norm + 1e-6), 1.0)
        with torch.no_grad():
            for g in grads:
                g.mul_(scale)
        return norm


def global_norm(grads: list[torch.Tensor]) -> float:
    """The L2 norm of all gradients together, whatever their sharding: gradients with the same mesh and
    placements share one reduction (torch's own total norm), and the groups are combined here."""
    groups: dict[object, list[torch.Tensor]] = defaultdict(list)
    for g in grads:
        groups[(g.device_mesh, g.placements) if isinstance(g, DTensor) else None].append(g)
    squares = 0.0
    for members in groups.values():
        norm = torch.nn.utils.get_total_norm(members, norm_type=2.0)
        if isinstance(norm, DTensor):
            norm = norm.full_tensor()
        squares += float(norm) ** 2
    return math.sqrt(squares)
