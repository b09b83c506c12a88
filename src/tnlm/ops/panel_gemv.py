"""Products of a few rows with a weight matrix, at the rate the memory streams the weights: the decode
step's linear layers (generation/layouts.py, layout "panels").

A decode step multiplies one row (or a few) by every weight matrix of the model, so its time is the time
to read the weights. Measured on a 2-core EPYC with the issue-20 shapes (512 -> 2048, 512 -> 2816,
1408 -> 512, 512 -> 32000), cycling through more weights than the caches hold: oneDNN's packed product
reads them at 24-34 GB/s, MKL's at 11-27, a plain `W.sum()` at 31-49. This small C kernel
(panel_gemv.c) reads them at 30-44 GB/s, 1.3-1.9x oneDNN's rate at one row, about oneDNN's at four, and
below it at eight, so the layout is one candidate that the decode step measures per shape and batch
size, not a replacement. F.linear is its reference (tests/ops/test_panel_gemv.py).

The weights are repacked once into panels of 16 outputs (`pack`), each one contiguous block; see the C
source for the loop. Inference only: the product has no gradient (`linear` refuses tensors that need one).

The kernel is compiled with the machine's C compiler (CC, else cc, gcc or clang) the first time a process
needs it, in about 0.2 s, for this CPU's vector instructions (-march=native), and kept beside the compiled
decode steps (generation/compiled.py: TNLM_COMPILE_CACHE, subfolder "kernels"), keyed by the source, the
compiler, its flags and the CPU, so a later process loads it. Without a compiler, or where every build
fails, `available()` is False and the decode step keeps the other layouts; `unavailable()` says why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import torch

PANEL = 16
SOURCE = "panel_gemv.c"
_SYMBOL = "tnlm_panel_gemv"
# tried in order until one builds: this CPU's vector instructions with OpenMP threads, then without
# -march=native (a compiler that does not know it), then single-threaded (a compiler without OpenMP)
_FLAG_SETS = (
    ["-O3", "-march=native", "-fopenmp"],
    ["-O3", "-fopenmp"],
    ["-O3", "-march=native"],
    ["-O3"],
)
_COMMON_FLAGS = ["-std=c11", "-shared", "-fPIC"]
_BUILD_TIMEOUT_S = 120


def pack(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) weight -> (ceil(N / 16), K, 16) float32 panels: panels[p, k, j] = weight[16 p + j, k], the
    rows past N zero."""
    if weight.dim() != 2:
        raise ValueError(f"pack takes an (out, in) weight matrix, got shape {tuple(weight.shape)}")
    n, k = weight.shape
    panels = -(-n // PANEL)
    padded = weight.detach().float().new_zeros(panels * PANEL, k)
    padded[:n] = weight.detach()
    return padded.view(panels, PANEL, k).transpose(1, 2).contiguous()


def linear(x: torch.Tensor, panels: torch.Tensor, out_features: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, K) @ W^T + bias -> (B, out_features) float32, W given as pack(W); F.linear(x, W, bias) up to
    float32 rounding. On this process's thread count (torch.get_num_threads())."""
    return product(panels, out_features, bias)(x)


def product(panels: torch.Tensor, out_features: int, bias: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """linear(x, panels, out_features, bias) as a function of x, the weights checked once (a decode step
    binds each layer's product once and calls it every token)."""
    fn, reason = _library()
    if fn is None:
        raise RuntimeError(f"the panel kernel is not available: {reason}")
    if panels.dim() != 3 or panels.shape[2] != PANEL or panels.dtype != torch.float32 or not panels.is_contiguous() \
            or panels.device.type != "cpu":  # fmt: skip
        raise ValueError("panels must come from panel_gemv.pack (contiguous float32 on the CPU, shape (P, K, 16))")
    K = panels.shape[1]
    if not 0 < out_features <= panels.shape[0] * PANEL:
        raise ValueError(f"{out_features} outputs do not fit panels of shape {tuple(panels.shape)}")
    if bias is not None and (bias.shape != (out_features,) or bias.dtype != torch.float32 or not bias.is_contiguous()):
        raise ValueError(f"bias must be a contiguous float32 vector of {out_features}")
    needs_grad = panels.requires_grad or (bias is not None and bias.requires_grad)
    w_ptr, b_ptr = panels.data_ptr(), None if bias is None else bias.data_ptr()

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != K or x.dtype != torch.float32 or x.device.type != "cpu":
            raise ValueError(f"x must be a (rows, {K}) float32 CPU tensor, got {tuple(x.shape)} {x.dtype} on {x.device}")
        if (x.requires_grad or needs_grad) and torch.is_grad_enabled():
            raise RuntimeError("the panel product has no gradient: call it under torch.no_grad() or inference_mode()")
        if x.stride(1) != 1:
            x = x.contiguous()
        y = torch.empty(x.shape[0], out_features, dtype=torch.float32)
        fn(x.data_ptr(), x.shape[0], K, x.stride(0), w_ptr, out_features, b_ptr, y.data_ptr(), out_features,
           torch.get_num_threads())  # fmt: skip
        return y

    apply.keep = (panels, bias)  # the pointers above stay valid while the product exists
    return apply


def available() -> bool:
    """Whether the kernel is loaded in this process (built or taken from the kernel cache on first call)."""
    return _library()[0] is not None


def unavailable() -> str | None:
    """Why the kernel is not available, or None when it is."""
    return _library()[1]


@functools.cache
def _library():
    """(the kernel's C function, None), from the kept library, built first if needed; or (None, why not)."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (install gcc or clang, or set CC to one)"
    source = files("tnlm.ops").joinpath(SOURCE).read_bytes()
    version = _compiler_version(compiler)
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(repr((source, compiler, version, flags, _COMMON_FLAGS, platform.machine(),
                                   _cpu_features())).encode()).hexdigest()[:24]  # fmt: skip
        try:
            return _open(compiler, flags, source, key), None
        except (OSError, subprocess.SubprocessError) as err:
            errors.append(f"{' '.join(flags)}: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
    return None, f"building {SOURCE} with {compiler} failed ({'; '.join(errors)[:500]})"


def _open(compiler: str, flags: list[str], source: bytes, key: str):
    """Load the library for this key from the kernel cache, building it there first if it is missing or
    unreadable; with no writable cache, build into a temporary folder removed once the library is loaded."""
    folder = _cache_folder()
    if folder is not None:
        path = folder / f"panel_gemv-{key}.so"
        if path.is_file():
            try:
                return _symbol(path)
            except OSError:  # cut short or corrupted: build it again
                path.unlink(missing_ok=True)
        from tnlm.data.files import atomic_path

        try:
            with atomic_path(path) as tmp:
                _build(compiler, flags, source, tmp)
        except OSError:  # the cache folder is not writable: build where we can
            pass
        else:
            return _symbol(path)
    with tempfile.TemporaryDirectory(prefix="tnlm-kernel-") as tmp:
        path = Path(tmp) / "panel_gemv.so"
        _build(compiler, flags, source, path)
        return _symbol(path)  # the loaded library stays mapped after its file is gone


def _build(compiler: str, flags: list[str], source: bytes, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tnlm-kernel-src-") as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        done = subprocess.run([compiler, *flags, *_COMMON_FLAGS, str(src), "-o", str(out)],
                              capture_output=True, text=True, timeout=_BUILD_TIMEOUT_S)  # fmt: skip
    if done.returncode != 0:
        raise subprocess.SubprocessError(done.stderr.strip() or f"{compiler} exited with {done.returncode}")


def _symbol(path: Path):
    fn = getattr(ctypes.CDLL(str(path)), _SYMBOL)
    c_long, ptr = ctypes.c_long, ctypes.c_void_p
    fn.argtypes = [ptr, c_long, c_long, c_long, ptr, c_long, ptr, ptr, c_long, ctypes.c_int]
    fn.restype = None
    return fn


def _cache_folder() -> Path | None:
    from tnlm.generation.compiled import cache_dir

    folder = cache_dir()
    return None if folder is None else folder / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(compiler: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    return ""


def _cpu_features() -> str:
    """What -march=native builds for: the CPU's model and feature flags (Linux), else the platform's name."""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(wanted)))
    return platform.processor()
