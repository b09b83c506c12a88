"""The processes of a run and how they share the work: the one place that builds the device mesh.

torchrun starts the processes and tells each its RANK, LOCAL_RANK and WORLD_SIZE, and where to meet
(MASTER_ADDR/MASTER_PORT, or a rendezvous endpoint). The mesh has three named dimensions,

    dp_shard x sp x tp = WORLD_SIZE        (tp innermost: the processes that talk most are neighbours)

- dp_shard: data parallel; each takes its share of data.batch_size rows.
- sp: sequence parallel; each takes a slice of every sequence (linear attention passes its state on).
- tp: tensor parallel; each holds a slice of the heads and of the feed-forward width.

The dp_shard and sp processes of one tp slice hold the same parameters and sum their gradients, so
FSDP2 shards over both together: the flattened dimension "dp_sp". Every check that can fail is made
here, from the environment alone, before any process waits for another.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from tnlm.errors import ConfigError
from tnlm.training.config import ParallelSection

DIMS = ("dp_shard", "sp", "tp")


@dataclass(frozen=True)
class Layout:
    dp_shard: int = 1
    sp: int = 1
    tp: int = 1

    @property
    def world_size(self) -> int:
        return self.dp_shard * self.sp * self.tp

    def describe(self) -> str:
        parts = [f"{n}-way {name}" for name, n in (("FSDP", self.dp_shard), ("sequence parallel", self.sp),
                                                   ("tensor parallel", self.tp)) if n > 1]  # fmt: skip
        return " x ".join(parts) or "one process"


def resolve_layout(cfg: ParallelSection, world_size: int) -> Layout:
    """The sizes of the mesh for `world_size` processes; dp_shard=-1 takes what tp and sp leave."""
    fixed = cfg.sp * cfg.tp
    launch = ("launch with `torchrun --nproc_per_node N -m tnlm train CONFIG ...`, where N is "
              "parallel.dp_shard * parallel.sp * parallel.tp")  # fmt: skip
    if world_size % fixed:
        raise ConfigError(f"parallel.sp * parallel.tp = {fixed} does not divide the {world_size} process(es) of "
                          f"this run: {launch}")  # fmt: skip
    dp = world_size // fixed if cfg.dp_shard == -1 else cfg.dp_shard
    layout = Layout(dp_shard=dp, sp=cfg.sp, tp=cfg.tp)
    if layout.world_size != world_size:
        raise ConfigError(
            f"parallel.dp_shard * sp * tp = {dp} * {cfg.sp} * {cfg.tp} = {layout.world_size}, but this run has "
            f"{world_size} process(es): {launch}"
        )
    return layout


@dataclass
class World:
    """This process's place in the run. `mesh` is None for a single process."""

    rank: int
    local_rank: int
    layout: Layout
    device: torch.device
    mesh: object | None = None  # torch.distributed.device_mesh.DeviceMesh with dims DIMS
    dims: dict[str, object] = field(default_factory=dict)  # name -> 1-D mesh: DIMS and "dp_sp"

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.mesh is not None

    def size(self, dim: str) -> int:
        return 1 if self.mesh is None else self.dims[dim].size()

    def coordinate(self, dim: str) -> int:
        """This process's index along `dim` (dp_shard, sp, tp or dp_sp)."""
        return 0 if self.mesh is None else self.dims[dim].get_local_rank()

    def group(self, dim: str):
        return self.dims[dim].get_group()

    def any(self, flag: bool) -> bool:
        """Whether `flag` is true in any process (every process gets the same answer)."""
        if self.mesh is None:
            return flag
        value = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def barrier(self) -> None:
        if self.mesh is not None:
            dist.barrier()

    def close(self) -> None:
        if self.mesh is not None and dist.is_initialized():
            dist.destroy_process_group()
            self.mesh = None


def launch_env() -> tuple[int, int, int]:
    """(rank, local rank, world size) as torchrun sets them; (0, 0, 1) for a plain process."""
    try:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise ConfigError("RANK, LOCAL_RANK and WORLD_SIZE must be integers (torchrun sets them)") from None
    return rank, local_rank, world_size


def pick_device(setting: str, *, local_rank: int, world_size: int) -> torch.device:
    """cpu, or this process's GPU: cuda:LOCAL_RANK when several processes share a machine."""
    wants_cuda = setting.startswith("cuda") or (setting == "auto" and torch.cuda.is_available())
    if not wants_cuda:
        if setting not in ("auto", "cpu"):
            raise ConfigError(f"train.device={setting}: distributed runs use cpu or cuda")
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"train.device={setting} but no CUDA device is available; use train.device=cpu")
    if world_size > 1 and setting not in ("auto", "cuda"):
        raise ConfigError(f"train.device={setting}: under torchrun each process uses cuda:LOCAL_RANK; "
                          "set train.device=cuda (and CUDA_VISIBLE_DEVICES to choose the GPUs)")  # fmt: skip
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(f"process {local_rank} of this machine has no GPU ({torch.cuda.device_count()} visible): "
                          "start at most that many processes per machine (--nproc_per_node)")  # fmt: skip
    device = torch.device(setting if world_size == 1 and setting != "auto" else f"cuda:{local_rank}")
    torch.cuda.set_device(device)
    return device


def init_world(cfg: ParallelSection, *, device_setting: str, timeout_s: float = 600.0) -> World:
    """Join the run's processes (torchrun's environment) and build the mesh; a single process gets a
    World without one. Gloo on CPUs, NCCL on GPUs."""
    rank, local_rank, world_size = launch_env()
    layout = resolve_layout(cfg, world_size)
    if world_size == 1:
        from tnlm.training.build import pick_device as pick_single

        return World(rank=0, local_rank=0, layout=layout, device=pick_single(device_setting))
    device = pick_device(device_setting, local_rank=local_rank, world_size=world_size)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_s))  # fmt: skip
    mesh, dims = build_mesh(layout, device)
    return World(rank=rank, local_rank=local_rank, layout=layout, device=device, mesh=mesh, dims=dims)


def build_mesh(layout: Layout, device: torch.device) -> tuple[object, dict[str, object]]:
    """The (dp_shard, sp, tp) mesh over the process group, and its 1-D meshes by name: the three
    dimensions and "dp_sp" (the first two flattened, where FSDP2 shards)."""
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (layout.dp_shard, layout.sp, layout.tp), mesh_dim_names=DIMS)
    dims = {name: mesh[name] for name in DIMS}
    dims["dp_sp"] = mesh["dp_shard", "sp"]._flatten("dp_sp")
    return mesh, dims
