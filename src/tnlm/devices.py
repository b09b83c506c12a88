"""Device and dtype names as users write them (CLI options, YAML configs) -> torch objects, checked
once with an error that says what to do instead of a traceback from deep inside torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tnlm.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPES = ("float32", "bfloat16")
_DTYPE_ALIASES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_dtype(name: str) -> torch.dtype:
    """float32 (fp32) or bfloat16 (bf16). float16 is refused: tnlm keeps its states in float32 and
    trains and serves in bfloat16, whose range float16 lacks."""
    import torch

    key = _DTYPE_ALIASES.get(name.strip().lower())
    if key is None:
        raise ConfigError(f"dtype {name!r} is not supported: use float32 (any device) or bfloat16 (GPUs; "
                          "very slow on most CPUs)")
    return getattr(torch, key)


def resolve_device(name: str) -> torch.device:
    """cpu, cuda, cuda:N or mps, checked against what this machine has."""
    import torch

    try:
        device = torch.device(name.strip().lower())
    except (RuntimeError, ValueError):
        raise ConfigError(f"device {name!r} is not a device name: use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: torch sees no CUDA GPU here (a CPU-only torch build, or no "
                              "driver); use cpu")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device {name!r}: MPS (Apple GPUs) is not available here; use cpu")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r}: tnlm runs on cpu, cuda or mps")
    return device


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors: MemAvailable for the CPU (Linux), free memory of a CUDA GPU;
    None where it cannot be known."""
    if device.type == "cuda":
        import torch

        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_fits(nbytes: int, device: torch.device, *, what: str) -> None:
    """Refuse work that cannot fit before it starts (and before the machine starts swapping)."""
    free = available_bytes(device)
    if free is not None and nbytes > free:
        raise ConfigError(f"{what}: {_size(nbytes)} needed, {device} has {_size(free)} free; "
                          "use a smaller model (see `tnlm presets`), or bfloat16 on a GPU")


def _size(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.1f} MiB"
