"""The compiled decode step: a TransNormer step for one batch size as one ahead-of-time compiled C++
function (PyTorch's AOTInductor), chosen with FastDecodeState(model, compile=True) or `--compile`.

The eager fast step (fast.py) dispatches ~95 small operators a token where its layers cannot run as one C
call (without a C compiler, or where another layout measured faster), 14 where they can. Exported once for a batch size
and compiled with the weights frozen in, the same arithmetic becomes a handful of fused loops around
the products (up to 3 rows Inductor's C++ GEMM micro-kernels, generated for that batch size and reading
weights blocked for them; from 4 rows oneDNN's packed products, faster there: TEMPLATE_MAX_BATCH),
all called from C++ with no Python in between. Measured with the issue-20 shape (d=512, 4 layers,
vocabulary 32000) on a 2-core EPYC, in one run: batch 1 2.2-4.1 ms a token (1.05-1.14x the time of
reading every weight once at the streaming-read rate measured beside each round) against 3.2-4.2 ms for
the eager fast step (with its one-call layers; 1.01-1.16x), batch 8 4.9-5.5 ms against 4.2-4.9 ms
(benchmarks/decode.py, model "tnl-compiled"). Before the one-call layer the eager step took 1.41-1.69x.

What it costs, and why it is not the default:
- compiling takes 20-30 s per batch size (export, C++ code generation, a C++ compiler); the library is
  kept on disk (TNLM_COMPILE_CACHE, below), so a later process with the same weights, batch size and
  software loads it in about a second, but the first run pays it in full;
- the weights are copied into the compiled library (the model's size again, in memory and on disk in
  the cache, which keeps at most TNLM_COMPILE_CACHE_GB, least recently used out first);
- only the TransNormer family, on CPUs, in float32: its state has a fixed shape, so one compiled step
  serves every context length. A Transformer's cache grows each step (a new shape each token), and
  the other cases have not been measured here.
Where it does not apply, or compiling fails (no C++ compiler, for instance), the eager fast step is
used and a warning says why, once.

The weights are frozen into the library, so each call checks that they are the ones it was compiled
from (every parameter's storage and version counter, like layouts.Linears): an optimizer step or a
load between decode steps is seen, and the step is compiled again. The result equals the reference
within float32 rounding (tests/generation/test_gen_compiled.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from tnlm.fsutil import COMPILE_CACHE_ENV, atomic_path, compile_cache_dir
from tnlm.generation.layouts import Watch


# freezing: the weights become constants, blocked once for the batch size. Up to TEMPLATE_MAX_BATCH rows
# the products are Inductor's own C++ GEMM template (micro-kernels generated for this batch size), above it
# oneDNN's packed products. Measured on the issue-20 model on the 2-core EPYC VM, compiled each way and
# timed alternately (ms per step, best round of 6 x 32 steps):
#     batch        1          2          4          8
#     template   4.3-4.8    4.0        4.0        7.9-8.1
#     oneDNN     6.5-6.8    6.2        4.1        6.1-6.6
# With a single candidate nothing is benchmarked while compiling; a product the template cannot take falls
# back to ATen. No precompiled headers: Inductor would leave two of ~140 MB each per Python environment in
# /tmp/torchinductor_$USER. Measured on the issue-20 model: the first compile takes 29 s without them
# against 37 s with them (making them costs more than they save once), later ones 22 s against 19 s, and
# later runs of the same model load from the disk cache below without compiling at all.
TEMPLATE_MAX_BATCH = 3
_BASE_CONFIGS = {"freezing": True, "aot_inductor.precompile_headers": False, "cpp_cache_precompile_headers": False}
_TEMPLATE_CONFIGS = {"max_autotune": True, "max_autotune_gemm_backends": "CPP", "autotune_fallback_to_aten": True}


def inductor_configs(batch: int) -> dict:
    """AOTInductor's settings for a step of `batch` rows (a new dict: AOTInductor adds to the one it gets)."""
    return {**_BASE_CONFIGS, **(_TEMPLATE_CONFIGS if batch <= TEMPLATE_MAX_BATCH else {})}


# Compiled steps are kept on disk, so that the next process with the same model, batch size and software
# loads one in about a second instead of compiling it again (measured: export 0.7 s, key 0.14 s, load
# 0.24 s, against 24 s to compile). TNLM_COMPILE_CACHE: the folder (default
# $XDG_CACHE_HOME/tnlm/compiled-steps, else ~/.cache/...), or "off". Each file holds the frozen weights
# (188 MB for a 121 MB model), so the folder is kept under TNLM_COMPILE_CACHE_GB (default 4), least
# recently used out first.
CACHE_ENV = COMPILE_CACHE_ENV
CACHE_GB_ENV = "TNLM_COMPILE_CACHE_GB"
CACHE_GB = 4.0
cache_dir = compile_cache_dir  # where compiled steps are kept, or None with the cache off (tnlm.fsutil)


def _cache_limit() -> int:
    value = os.environ.get(CACHE_GB_ENV, "")
    try:
        gb = float(value) if value.strip() else CACHE_GB
    except ValueError:
        warnings.warn(f"{CACHE_GB_ENV}={value!r} is not a number of gigabytes; using {CACHE_GB}", stacklevel=3)
        gb = CACHE_GB
    return int(max(gb, 0.0) * 2**30)


def _cache_key(program, args: tuple, configs: dict) -> str:
    """What the compiled library depends on: the software and the CPU's vector instructions it is built
    for, the settings, the exported graph, the input shapes, and the bytes of every weight and constant."""
    import torch._inductor.cpu_vec_isa as isa

    import tnlm

    h = hashlib.sha256()
    parts = (torch.__version__, tnlm.__version__, str(isa.pick_vec_isa()), sorted(configs.items()),
             program.graph_module.code, [(tuple(a.shape), a.dtype) for a in args])  # fmt: skip
    for part in parts:
        h.update(repr(part).encode() + b"\0")
    tensors = {**program.state_dict, **program.constants}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy())
    return h.hexdigest()[:32]


def _cache_file(program, args: tuple, configs: dict) -> Path | None:
    """Where this step's library is kept; None with the cache off, or if the key cannot be computed (a
    tensor hashlib cannot read, say): then the step is compiled as without a cache."""
    folder = cache_dir()
    if folder is None:
        return None
    try:
        return folder / f"step-{_cache_key(program, args, configs)}.pt2"
    except Exception:
        return None


def _load_cached(path: Path | None):
    """The runner of a kept compiled step, or None (not kept, or unreadable: then the file is removed)."""
    if path is None or not path.is_file():
        return None
    try:
        runner = torch._inductor.aoti_load_package(str(path))
    except Exception:  # cut short by a crash, or from a PyTorch that reads it otherwise: compile anew
        path.unlink(missing_ok=True)
        return None
    _remove_cached_libraries(path)
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: evicted last
    return runner


def _store(package: Path, path: Path) -> None:
    """Copy the package into the cache (atomically: a copy cut short never looks complete), then evict
    the least recently used files beyond the size limit."""
    with atomic_path(path) as tmp:
        shutil.copyfile(package, tmp)
    _evict(path.parent, _cache_limit())


def _evict(folder: Path, limit: int) -> None:
    """Remove the least recently used packages until the folder holds at most `limit` bytes (a package
    larger than the limit on its own goes too), and temporary copies left by a killed process."""
    now = time.time()
    for tmp in folder.glob("*.tmp"):
        try:
            if now - tmp.stat().st_mtime > 3600:
                tmp.unlink(missing_ok=True)
        except OSError:
            pass
    files = []
    for f in folder.glob("*.pt2"):
        try:
            st = f.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, f))
    total = sum(size for _, size, _ in files)
    for _, size, f in sorted(files, key=lambda x: x[0]):
        if total <= limit:
            break
        f.unlink(missing_ok=True)
        total -= size


def unsupported(decoder: nn.Module, lm_head: nn.Linear) -> str | None:
    """Why this model cannot take the compiled step, or None if it can."""
    from tnlm.models.transnormer.modeling import TransnormerModel

    if not isinstance(decoder, TransnormerModel):
        return f"the compiled step is made for TransNormer models only (this is {type(decoder).__name__})"
    tensors = list(decoder.parameters()) + [lm_head.weight]
    if any(t.device.type != "cpu" for t in tensors):
        return "the compiled step runs on CPUs only (the model is on another device)"
    if any(t.dtype != torch.float32 for t in tensors):
        return "the compiled step needs float32 weights (load the model in float32)"
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception:
        return "compiling needs a C++ compiler and none was found (install g++, or set CXX to one)"
    return None


def model_unsupported(model: nn.Module) -> str | None:
    """unsupported() for a whole causal LM, from anywhere (a model from outside tnlm has no fast step)."""
    from tnlm.generation.fast import _decoder, _own_modules

    decoder = _decoder(model)
    if decoder is None or not _own_modules(model):
        return "the compiled step is made for tnlm's own TransNormer models only"
    return unsupported(decoder, model.lm_head)


class _States:
    """What _TransnormerStep reads the states from: an object with .layers."""

    def __init__(self, layers: list[torch.Tensor]) -> None:
        self.layers = layers


class _StepModule(nn.Module):
    """The fast step's arithmetic on plain products, as a module torch.export can trace:
    (tokens (B,), positions (B,), state of each layer) -> logits (B, V), the states updated in place."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Linear) -> None:
        from tnlm.generation.fast import _TransnormerStep

        super().__init__()
        self.decoder, self.lm_head = decoder, lm_head
        self.layers = _TransnormerStep(decoder, None)  # None: plain products, no derived layouts
        device = lm_head.weight.device
        for i in range(len(self.layers.blocks)):  # computed now, so that tracing finds constants
            self.layers._lam_m1(i, device)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, *states: torch.Tensor) -> torch.Tensor:
        from tnlm.generation.fast import run_step

        return run_step(self.decoder, self.layers, self.lm_head, tokens, positions, None, _States(list(states)))


class _Compiled:
    """One batch size's compiled step and the weights it was compiled from."""

    def __init__(self, runner, made_from: Watch) -> None:
        self.runner, self.made_from = runner, made_from


class CompiledSteps:
    """The compiled steps of one model, one per batch size, made on first use (module docstring)."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Linear) -> None:
        self.decoder, self.lm_head = decoder, lm_head
        self._steps: dict[int, _Compiled | None] = {}  # batch size -> step (None: compiling failed)
        self._warned: set[str] = set()
        self.compile_s: dict[int, float] = {}  # batch size -> seconds spent compiling for it (failures too)

    def _watch(self) -> Watch:
        """Every parameter and buffer, read through their modules, so that a tensor replaced (a load with
        assign=True) is seen as well as one changed in place."""
        return Watch([self.lm_head, *self.decoder.modules()], names=None, buffers=True)

    def nbytes(self) -> int:
        """Bytes of the weights frozen into the compiled steps kept now (one copy per batch size)."""
        tensors = {t.data_ptr(): t for t in [self.lm_head.weight, *self.decoder.parameters()]}
        return sum(t.nbytes for t in tensors.values()) * sum(step is not None for step in self._steps.values())

    def _warn(self, reason: str) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            warnings.warn(f"{reason}; decoding with the eager fast step instead", stacklevel=4)

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor | None:
        """Logits (B, V) from the compiled step for this batch size, the cache's states updated in place;
        None when it cannot be used (the caller takes the eager step; a warning said why)."""
        batch = tokens.shape[0]
        step = self._steps.get(batch, ...)
        if step is None:  # compiling this batch size failed before
            return None
        if step is ... or not step.made_from.current():
            reason = unsupported(self.decoder, self.lm_head)
            if reason is not None:
                self._warn(reason)
                return None
            step = self._steps[batch] = self._compile(tokens, positions, cache.layers, self._watch())
            if step is None:
                return None
        states = cache.layers
        if any(s.dtype != torch.float32 or not s.is_contiguous() for s in states):
            states = cache.layers = [s.float().contiguous() for s in states]
        return step.runner(tokens, positions.to(torch.long), *states)

    def _keep(self, package: Path, path: Path) -> None:
        try:
            _store(package, path)
        except OSError as err:  # a read-only or full disk: the step works, only the next process compiles again
            if "cache" not in self._warned:
                self._warned.add("cache")
                warnings.warn(f"could not keep the compiled step in {path.parent} ({err}); the next run compiles "
                              f"it again (set {CACHE_ENV} to a writable folder, or to off)", stacklevel=5)  # fmt: skip

    def _compile(self, tokens, positions, states, made_from: Watch) -> _Compiled | None:
        t0 = time.perf_counter()
        workdir = Path(tempfile.mkdtemp(prefix="tnlm-compiled-step-"))
        try:
            with torch.inference_mode(False), torch.no_grad():
                # example inputs outside inference mode (export refuses inference tensors); only shapes matter
                args = (tokens.clone(), positions.to(torch.long).clone(), *(s.clone() for s in states))
                program = torch.export.export(_StepModule(self.decoder, self.lm_head), args, strict=False)
                configs = inductor_configs(len(tokens))
                kept = _cache_file(program, args, configs)
                runner = _load_cached(kept)
                if runner is None:
                    path = torch._inductor.aoti_compile_and_package(
                        program, package_path=str(workdir / "step.pt2"), inductor_configs=configs
                    )
                    runner = torch._inductor.aoti_load_package(path)
                    _remove_cached_libraries(Path(path))
                    if kept is not None:
                        self._keep(Path(path), kept)
        except Exception as err:  # no compiler, an operator the exporter does not know, ...
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            self._warn(f"compiling the decode step for batch size {tokens.shape[0]} failed ({first[:300]})")
            return None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)  # the loaded library no longer needs the file
            batch = tokens.shape[0]
            self.compile_s[batch] = self.compile_s.get(batch, 0.0) + time.perf_counter() - t0
        return _Compiled(runner, made_from)


def _remove_cached_libraries(package: Path) -> None:
    """Delete the libraries of this package from Inductor's cache directory. Inductor keeps each
    compiled library there, and with the weights frozen in, each compilation of the step would leave a
    file the size of the model (measured: 188 MB for a 121 MB model, again for every process and batch
    size). Once loaded the library needs no file; only this package's own files are removed (found by
    name), so another process's compilation is not disturbed."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir

        names = {Path(n).name for n in zipfile.ZipFile(package).namelist() if n.endswith(".so")}
        for name in names:
            for path in Path(cache_dir()).rglob(name):
                path.unlink(missing_ok=True)
    except Exception:  # cleaning up is a courtesy: a PyTorch that lays its cache out otherwise keeps it
        pass
