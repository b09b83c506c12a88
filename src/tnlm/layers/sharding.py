"""What a layer needs to know when tensor parallelism has split its heads across processes."""

from __future__ import annotations

import torch
from torch.distributed.tensor import DTensor


def local_shard(t: torch.Tensor) -> torch.Tensor:
    """The part of a parameter this process computes with: the tensor itself, or, when tensor
    parallelism made it a DTensor sharded by heads, this process's heads (gradients flow back)."""
    return t.to_local() if isinstance(t, DTensor) else t


def check_head_split(num_heads: int, parts: int, rank: int) -> int:
    """Heads per process when `num_heads` are split in `parts`; a clear error when they cannot be."""
    from tnlm.errors import ConfigError

    if parts < 1 or num_heads % parts or not 0 <= rank < parts:
        raise ConfigError(f"{num_heads} heads cannot be split into {parts} equal parts (rank {rank})")
    return num_heads // parts
