"""The decode step's own CPU kernels (decode_kernels.c), for what PyTorch's operators do slowly at a
decode step's few rows:

1. Products of a few rows with a weight matrix, at the rate the memory streams the weights (the linear
   layers' layout "panels", generation/layouts.py). A decode step multiplies one row (or a few) by every
   weight matrix of the model, so its time is the time to read the weights. Measured on a 2-core EPYC
   with the issue-20 shapes (512 -> 2048, 512 -> 2816, 1408 -> 512, 512 -> 32000), cycling through more
   weights than the caches hold: oneDNN's packed product reads them at 24-34 GB/s, MKL's at 11-27, a
   plain `W.sum()` at 31-49; this kernel at 30-44 GB/s, 1.3-1.9x oneDNN's rate at one row. With
   AVX-512 (two panels and up to eight rows at a time) the issue-20 model's products took 2.2-2.9 ms
   against oneDNN's 2.9-3.7 at 2-4 rows and 3.4-3.6 against 4.4-4.6 at eight. The layout is still one
   candidate that the decode step measures per shape and batch size, not a replacement. The weights are repacked once into panels of 16 outputs
   (`pack`), each one contiguous block. Reference: F.linear.
2. TransNormer's recurrent update and read-out in one pass over the state (`decay_step`): PyTorch takes
   three (two in-place updates and a product); measured 25 -> 8 us a layer at batch 1 and 158 -> 33 us at
   batch 8 (d=512, 8 heads). Reference: `decay_step_reference`, the fast step's former code.
3. A whole TransNormer layer for one token per row in one call (`TransnormerLayer`): the norms, the four
   products in panels, the feature map, LRPE, the state update and read-out (2.), the gate and SGLU. The
   fast step's PyTorch operators for a layer cost ~25 dispatches (~100 us at batch 1 on these CPUs, more
   than its arithmetic besides the products); this is one. silu and sigmoid use a vectorised exp (within
   1 ulp of libm's), LRPE's cos and sin a vectorised reduction and polynomial in double (within 0.5 ulp).
   Reference: the operators (generation/fast.py), and tests/ops/test_decode_kernels.py's composition.

Tests: tests/ops/test_decode_kernels.py, on odd sizes, against the references. Inference only: neither
has a gradient (both refuse tensors that need one).

The kernels are compiled with the machine's C compiler (CC, else cc, gcc or clang) the first time a
process needs them, in about 0.7 s, for this CPU's vector instructions (-march=native), and kept beside
the compiled decode steps (generation/compiled.py: TNLM_COMPILE_CACHE, subfolder "kernels"), keyed by the
source, the compiler, its flags and the CPU, so a later process loads them (the KEEP_LIBRARIES used last:
building one removes the others). Without a compiler, or where
every build fails, `available()` is False and the decode step uses PyTorch's operators; `unavailable()`
says why. The library asks for libgomp.so.1, which resolves to the OpenMP runtime PyTorch has already
loaded (checked in /proc/self/maps: one runtime, one thread pool); the thread count is passed per call.
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
from typing import NamedTuple

import torch

from tnlm.fsutil import atomic_path, compile_cache_dir, remove_unfinished

PANEL = 16
SOURCE = "decode_kernels.c"
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
KEEP_LIBRARIES = 8  # built libraries kept in the cache folder, the ones used last (see _evict)


def pack(weight: torch.Tensor) -> torch.Tensor:
    """(N, K) weight -> (ceil(N / 16), K, 16) float32 panels: panels[p, k, j] = weight[16 p + j, k], the
    rows past N zero."""
    if weight.dim() != 2:
        raise ValueError(f"pack takes an (out, in) weight matrix, got shape {tuple(weight.shape)}")
    n, k = weight.shape
    w = weight.detach()
    full, rest = divmod(n, PANEL)
    out = torch.empty(full + (rest > 0), k, PANEL, dtype=torch.float32, device=w.device)  # the only copy made
    out[:full] = w[: full * PANEL].view(full, PANEL, k).transpose(1, 2)
    if rest:
        out[full].zero_()
        out[full, :, :rest] = w[full * PANEL :].t()
    return out


def linear(x: torch.Tensor, panels: torch.Tensor, out_features: int, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x (B, K) @ W^T + bias -> (B, out_features) float32, W given as pack(W); F.linear(x, W, bias) up to
    float32 rounding. On this process's thread count (torch.get_num_threads())."""
    return product(panels, out_features, bias)(x)


def product(panels: torch.Tensor, out_features: int, bias: torch.Tensor | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """linear(x, panels, out_features, bias) as a function of x, the weights checked once (a decode step
    binds each layer's product once and calls it every token)."""
    kernels, reason = _library()
    if kernels is None:
        raise RuntimeError(f"the decode kernels are not available: {reason}")
    fn = kernels.panel_gemv
    if panels.dim() != 3 or panels.shape[2] != PANEL or not _is_cpu_f32(panels) or not panels.is_contiguous():
        raise ValueError("panels must come from decode_kernels.pack (contiguous float32 on the CPU, shape (P, K, 16))")
    K = panels.shape[1]
    if not 0 < out_features <= panels.shape[0] * PANEL:
        raise ValueError(f"{out_features} outputs do not fit panels of shape {tuple(panels.shape)}")
    if bias is not None and (bias.shape != (out_features,) or bias.dtype != torch.float32 or not bias.is_contiguous()):
        raise ValueError(f"bias must be a contiguous float32 vector of {out_features}")
    needs_grad = panels.requires_grad or (bias is not None and bias.requires_grad)
    w_ptr, b_ptr = panels.data_ptr(), None if bias is None else bias.data_ptr()

    def apply(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != K or not _is_cpu_f32(x):
            raise ValueError(f"x must be a (rows, {K}) float32 CPU tensor, got {tuple(x.shape)} {x.dtype} on {x.device}")
        if (x.requires_grad or needs_grad) and torch.is_grad_enabled():
            raise RuntimeError("the panel product has no gradient: call it under torch.no_grad() or inference_mode()")
        if x.stride(1) != 1:
            x = x.contiguous()
        y = torch.empty(x.shape[0], out_features, dtype=torch.float32, device="cpu")
        fn(x.data_ptr(), x.shape[0], K, x.stride(0), w_ptr, out_features, b_ptr, y.data_ptr(), out_features,
           torch.get_num_threads())  # fmt: skip
        return y

    apply.keep = (panels, bias)  # the pointers above stay valid while the product exists
    return apply


def decay_step(state: torch.Tensor, lam_m1: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """decay_step_reference in one pass over the state (see the module docstring): state (B, H, Dk, Dv)
    float32, contiguous, updated in place; lam_m1 (H values): lambda - 1 per head; q, k (B, H, Dk); v
    (B, H, Dv). Returns o (B, H * Dv). On this process's thread count (torch.get_num_threads())."""
    kernels, reason = _library()
    if kernels is None:
        raise RuntimeError(f"the decode kernels are not available: {reason}")
    B, H, Dk, Dv = state.shape
    tensors = (state, lam_m1, q, k, v)
    if not all(_is_cpu_f32(t) for t in tensors) or not state.is_contiguous():
        raise ValueError("decay_step takes float32 CPU tensors and a contiguous state")
    if lam_m1.numel() != H or q.shape != (B, H, Dk) or k.shape != (B, H, Dk) or v.shape != (B, H, Dv):
        raise ValueError(f"shapes do not match the state {tuple(state.shape)}: lam_m1 {tuple(lam_m1.shape)}, "
                         f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")  # fmt: skip
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError("decay_step has no gradient: call it under torch.no_grad() or inference_mode()")
    lam_m1, q, k, v = (t.contiguous() for t in (lam_m1, q, k, v))
    o = torch.empty(B, H * Dv, dtype=torch.float32, device="cpu")
    kernels.decay_step(state.data_ptr(), B * H, H, Dk, Dv, lam_m1.data_ptr(), q.data_ptr(), k.data_ptr(),
                       v.data_ptr(), o.data_ptr(), torch.get_num_threads())  # fmt: skip
    return o


def decay_step_reference(state, lam_m1, q, k, v) -> torch.Tensor:
    """S = S + (lambda - 1) S + k^T v in place on state (B, H, Dk, Dv); returns o = q S as (B, H * Dv)."""
    B, H = state.shape[:2]
    state.addcmul_(state, lam_m1.view(1, H, 1, 1)).addcmul_(k.reshape(B, H, -1, 1), v.reshape(B, H, 1, -1))
    return torch.matmul(q.reshape(B, H, 1, -1), state).view(B, -1)


# the feature maps tnlm_transnormer_layer computes, by their name in tnlm.layers.activations ("swish" is silu)
ACTIVATIONS = ("none", "silu", "relu", "sigmoid", "gelu", "elu", "1+elu", "exp")


class _LayerSpec(ctypes.Structure):  # struct tnlm_transnormer_layer
    _fields_ = [(name, ctypes.c_long) for name in ("d", "hidden", "heads", "head_dim", "glu")] + \
               [(name, ctypes.c_void_p) for name in ("qkvu", "qkvu_bias", "out", "out_bias", "l12", "l12_bias", "l3", "l3_bias",
                                                    "token_norm", "mixer_norm", "channel_norm")] + \
               [(name, ctypes.c_double) for name in ("token_eps", "mixer_eps", "channel_eps")] + \
               [("theta", ctypes.c_void_p), ("lam_m1", ctypes.c_void_p), ("qk_act", ctypes.c_long), ("glu_act", ctypes.c_long)]  # fmt: skip


class Norm(NamedTuple):
    """An RMSNorm's weight (None: SRMSNorm, no weight) and eps."""

    weight: torch.Tensor | None
    eps: float


class Product(NamedTuple):
    """A linear layer as pack(W), its bias (or None) and its number of outputs (W's rows)."""

    panels: torch.Tensor
    bias: torch.Tensor | None
    out_features: int


class TransnormerLayer:
    """One token per row through a TransNormer block in one call (decode_kernels.c, tnlm_transnormer_layer):
    SRMSNorm or RMSNorm, the qkvu product, the feature map, LRPE, the state's update and read-out, the
    output norm and gate, the output product, and SGLU, with the products in panels. What the fast decode
    step (generation/fast.py) computes with PyTorch's operators, which stays the reference: the same
    arithmetic in the same order, up to float32 rounding (sums of another order). Inference only.

    qkvu: (4 hidden outputs) q, k, v, u; l12: (2 glu) l1 and l2 concatenated; sizes read from the products; theta: (hidden,) LRPE
    frequencies or None; lam_m1: (heads,) lambda - 1; qk_act, glu_act: names from ACTIVATIONS."""

    def __init__(self, *, heads: int, qkvu: Product, out: Product, l12: Product, l3: Product, token_norm: Norm,
                 mixer_norm: Norm, channel_norm: Norm, theta: torch.Tensor | None, lam_m1: torch.Tensor,
                 qk_act: str, glu_act: str) -> None:  # fmt: skip
        kernels, reason = _library()
        if kernels is None:
            raise RuntimeError(f"the decode kernels are not available: {reason}")
        d, hidden, glu = qkvu.panels.shape[1], out.panels.shape[1], l3.panels.shape[1]
        expected = {"qkvu": (qkvu, d, 4 * hidden), "out": (out, hidden, d), "l12": (l12, d, 2 * glu), "l3": (l3, glu, d)}
        for name, (prod, k, n) in expected.items():
            p = prod.panels
            if p.dim() != 3 or p.shape[1:] != (k, PANEL) or prod.out_features != n or p.shape[0] != -(-n // PANEL) \
                    or not _is_cpu_f32(p) or not p.is_contiguous():  # fmt: skip
                raise ValueError(f"{name}: expected pack() panels of a ({n}, {k}) weight, got {prod.out_features} outputs "
                                 f"in panels of shape {tuple(p.shape)}")  # fmt: skip
            if prod.bias is not None and (prod.bias.shape != (n,) or not _is_cpu_f32(prod.bias) or not prod.bias.is_contiguous()):
                raise ValueError(f"{name}: the bias must be a contiguous float32 vector of {n}")
        if hidden % heads:
            raise ValueError(f"the hidden size {hidden} does not split into {heads} heads")
        for name, norm, n in (("token_norm", token_norm, d), ("mixer_norm", mixer_norm, hidden), ("channel_norm", channel_norm, d)):
            if norm.weight is not None and (norm.weight.shape != (n,) or not _is_cpu_f32(norm.weight) or not norm.weight.is_contiguous()):
                raise ValueError(f"{name}: the weight must be a contiguous float32 vector of {n}")
        if theta is not None and (theta.numel() != hidden or not _is_cpu_f32(theta) or not theta.is_contiguous()):
            raise ValueError(f"theta must be {hidden} contiguous float32 numbers")
        if lam_m1.numel() != heads or not _is_cpu_f32(lam_m1) or not lam_m1.is_contiguous():
            raise ValueError(f"lam_m1 must be {heads} contiguous float32 numbers")
        for name in (qk_act, glu_act):
            if name not in ACTIVATIONS:
                raise ValueError(f"activation {name!r} is not one the kernel computes ({', '.join(ACTIVATIONS)})")
        ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
        self.d, self.heads, self.head_dim, self.dk = d, heads, hidden // heads, (2 if theta is not None else 1) * hidden // heads
        self._spec = _LayerSpec(d, hidden, heads, hidden // heads, glu,
                                *(ptr(t) for prod in (qkvu, out, l12, l3) for t in prod[:2]),
                                *(ptr(n.weight) for n in (token_norm, mixer_norm, channel_norm)),
                                *(float(n.eps) for n in (token_norm, mixer_norm, channel_norm)),
                                ptr(theta), ptr(lam_m1), ACTIVATIONS.index(qk_act), ACTIVATIONS.index(glu_act))  # fmt: skip
        self._ref = ctypes.byref(self._spec)
        self._fn = kernels.transnormer_layer
        self.keep = (qkvu, out, l12, l3, token_norm, mixer_norm, channel_norm, theta, lam_m1)  # the pointers stay valid

    def __call__(self, x: torch.Tensor, positions: torch.Tensor, state: torch.Tensor, *, threads: int | None = None,
                 state_threads: int | None = None) -> None:  # fmt: skip
        """x (B, d) float32, updated in place; positions (B,) int64 (LRPE); state (B, heads, Dk, head_dim)
        float32, contiguous, updated in place. threads: for the products, state_threads: for the state
        (default: this process's thread count)."""
        B = x.shape[0]
        if x.shape != (B, self.d) or not _is_cpu_f32(x) or not x.is_contiguous():
            raise ValueError(f"x must be a contiguous (rows, {self.d}) float32 CPU tensor, got {tuple(x.shape)} {x.dtype}")
        if state.shape != (B, self.heads, self.dk, self.head_dim) or not _is_cpu_f32(state) or not state.is_contiguous():
            raise ValueError(f"state must be a contiguous float32 ({B}, {self.heads}, {self.dk}, {self.head_dim}), got "
                             f"{tuple(state.shape)} {state.dtype}")  # fmt: skip
        if positions.shape != (B,) or positions.dtype != torch.long or positions.device.type != "cpu" or not positions.is_contiguous():
            raise ValueError(f"positions must be a contiguous int64 CPU vector of {B}")
        if torch.is_grad_enabled() and (x.requires_grad or state.requires_grad):
            raise RuntimeError("the TransNormer layer kernel has no gradient: call it under torch.no_grad() or inference_mode()")
        if B == 0:
            return
        n = torch.get_num_threads()
        if self._fn(self._ref, x.data_ptr(), B, positions.data_ptr(), state.data_ptr(), threads or n, state_threads or n):
            raise MemoryError(f"the TransNormer layer kernel could not allocate its buffers for {B} rows")


def _is_cpu_f32(t: torch.Tensor) -> bool:
    return t.dtype == torch.float32 and t.device.type == "cpu"


def available() -> bool:
    """Whether the kernels are loaded in this process (built or taken from the kernel cache on first call)."""
    return _library()[0] is not None


def unavailable() -> str | None:
    """Why the kernels are not available, or None when they are."""
    return _library()[1]


@functools.cache
def _library() -> tuple[_Kernels | None, str | None]:
    """(the kernels, None), from the kept library, built first if needed; or (None, why not)."""
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (install gcc or clang, or set CC to one)"
    source = files("tnlm.ops").joinpath(SOURCE).read_bytes()
    built_for = (source, compiler, _compiler_version(compiler), _COMMON_FLAGS, platform.machine(), _cpu_features())
    errors = []
    for flags in _FLAG_SETS:
        key = hashlib.sha256(repr((*built_for, flags)).encode()).hexdigest()[:24]
        try:
            return _open(compiler, flags, source, key), None
        except Exception as err:  # a failed build, a library without the symbols, ...: the next flags, or none
            errors.append(f"{' '.join(flags)}: {str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__}")
    return None, f"building {SOURCE} with {compiler} failed ({'; '.join(errors)[:500]})"


def _open(compiler: str, flags: list[str], source: bytes, key: str):
    """Load the library for this key from the kernel cache, building it there first if it is missing or
    unreadable; with no writable cache, build into a temporary folder removed once the library is loaded."""
    folder = _cache_folder()
    if folder is not None:
        path = folder / f"decode_kernels-{key}.so"
        if path.is_file():
            try:
                kernels = _symbol(path)
                with contextlib.suppress(OSError):
                    os.utime(path)  # used now: the eviction below keeps the libraries used last
                return kernels
            except OSError:  # cut short or corrupted: build it again
                path.unlink(missing_ok=True)
        try:
            remove_unfinished(path)  # a build killed before its rename
            with atomic_path(path) as tmp:
                _build(compiler, flags, source, tmp)
            kernels = _symbol(path)
            _evict(folder, keep=path)
            return kernels
        except OSError:  # the cache folder cannot be written, or its files not loaded (noexec): build elsewhere
            pass
    with tempfile.TemporaryDirectory(prefix="tnlm-kernel-") as tmp:
        path = Path(tmp) / "decode_kernels.so"
        _build(compiler, flags, source, path)
        return _symbol(path)  # the loaded library stays mapped after its file is gone


def _evict(folder: Path, keep: Path) -> None:
    """Remove all but the KEEP_LIBRARIES libraries used last (by their time stamps): each tnlm version, compiler
    or CPU that shares the cache builds its own, and a library is small (~30 KB) but nothing else removes
    them. One evicted that another process still uses stays mapped there; a later process rebuilds it."""
    libraries = []
    for path in folder.glob("decode_kernels-*.so"):
        with contextlib.suppress(OSError):
            libraries.append((path.stat().st_mtime, path))
    libraries.sort(reverse=True)
    for _, path in libraries[KEEP_LIBRARIES:]:
        if path != keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _build(compiler: str, flags: list[str], source: bytes, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="tnlm-kernel-src-") as tmp:
        src = Path(tmp) / SOURCE
        src.write_bytes(source)
        done = subprocess.run([compiler, *flags, *_COMMON_FLAGS, str(src), "-o", str(out), "-lm"], capture_output=True,
                              text=True, errors="replace", timeout=_BUILD_TIMEOUT_S)  # fmt: skip
    if done.returncode != 0:
        raise subprocess.SubprocessError(done.stderr.strip() or f"{compiler} exited with {done.returncode}")


class _Kernels(NamedTuple):
    panel_gemv: Callable
    decay_step: Callable
    transnormer_layer: Callable


def _symbol(path: Path) -> _Kernels:
    lib = ctypes.CDLL(str(path))
    c_long, ptr, c_int = ctypes.c_long, ctypes.c_void_p, ctypes.c_int
    gemv, decay = lib.tnlm_panel_gemv, lib.tnlm_decay_step
    gemv.argtypes = [ptr, c_long, c_long, c_long, ptr, c_long, ptr, ptr, c_long, c_int]
    decay.argtypes = [ptr, c_long, c_long, c_long, c_long, ptr, ptr, ptr, ptr, ptr, c_int]
    gemv.restype = decay.restype = None
    layer = lib.tnlm_transnormer_layer
    layer.argtypes = [ptr, ptr, c_long, ptr, ptr, c_int, c_int]  # positions: int64_t *
    layer.restype = c_int
    return _Kernels(gemv, decay, layer)


def _cache_folder() -> Path | None:
    try:
        folder = compile_cache_dir()
    except RuntimeError:  # no home folder to expand ~ in: nothing is kept
        return None
    return None if folder is None else folder / "kernels"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _compiler_version(compiler: str) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run([compiler, "--version"], capture_output=True, text=True, errors="replace", timeout=30).stdout
    return ""


def _cpu_features() -> str:
    """What -march=native builds for: the CPU's model and feature flags (Linux), else the platform's name."""
    with contextlib.suppress(OSError):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
        return "\n".join(sorted(set(wanted)))
    return platform.processor()
