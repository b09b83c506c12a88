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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20


def tune_allocator() -> bool:
    """Keep freed CPU buffers of up to 32 MB in the process's heap for the next one, instead of returning
    each to the OS and faulting the next one in page by page (glibc on Linux; elsewhere nothing happens).

    A prompt pass allocates and frees activations of a few to tens of MB per layer; by default glibc
    maps each with mmap and unmaps it on free, so every layer pays ~1 page fault per 4 KiB it writes.
    Measured here on the issue-20 shape (float32, 2 threads): a 2048-token prefill 0.43 -> 0.38 s,
    512 tokens 3% faster. The cost: up to TRIM_THRESHOLD of freed memory stays mapped to the process.
    The `tnlm` command calls this at start; TNLM_MALLOC_TUNE=0 (or false, no, off) turns it off. Returns
    whether it applied.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("TNLM_MALLOC_TUNE", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
