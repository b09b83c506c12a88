"""How the fast decode step (fast.py) reads its weights: the layout of each linear product, measured per
batch size, and products that share an input fused into one.

nn.Linear keeps W as (out, in) rows and computes x @ W^T. For the few rows of a decode step a math
library may do much better with another layout: MKL on an AMD EPYC streams an input-major (in, out)
copy of the 512 x 32000 LM head 1.8-2x faster at one row, and oneDNN's packed (blocked) layout computes
eight rows ~1.3x faster than either. tnlm's own panel kernel (ops/decode_kernels.py: W in contiguous panels of
16 outputs, a small C loop built on first use) reads the weights at about a plain streaming read's rate
at one or two rows, 1.3-1.9x oneDNN's packed rate there, and with AVX-512 computes two to eight rows
faster than oneDNN too. A step that can run a whole layer as one C call asks for the panel layout to be
favoured (`favour_panels`: it wins unless another is faster by more than that factor and that many
seconds). Which wins depends on the library, the CPU, the
shape and the batch size, so "auto" measures the candidates side by side, interleaved, on the step's own
input, once per weight shape and batch-size bucket (powers of two), and keeps a derived copy of a weight
only while some bucket uses it, within a budget (Layouts: at most twice the weights and MAX_COPY_FRACTION
of the memory available; past it a layer keeps the plain layout). "rows", "columns", "packed" or
"panels" force one layout (tests compare each); "rows" keeps no copy. The environment variable
TNLM_DECODE_LAYOUT sets it for a process.

Products that read the same input (SGLU's l1 and l2, SwiGLU's gate and up, the Transformer's q, k
and v) are one `Linears`: in a derived layout their weights are concatenated into one copy and
computed as one product, which a math library runs markedly faster at one row than two smaller ones
(and one call instead of several); in "rows" each reads its own weight, no copy.

A call costs one dictionary lookup and a check that the weights and biases are the ones the copy was
made from (a `Watch`: the same tensors, storage and version counter, so an optimizer step or a load
between decode steps is seen and the copy remade): the product for each bucket is bound once.

Threads: every parallel region of an operator wakes the other OpenMP threads, and with sleeping
workers (OMP_WAIT_POLICY=PASSIVE, or any gap longer than the spin time) a wake costs ~60-90 us on
these CPUs: more than the whole arithmetic of a norm, an activation or a cos on a decode step's few
thousand numbers (MKL's vector math runs even a 512-element cos in parallel). `serial()` runs a
step's small operators on one thread; inside it each `Linears` product, and whatever the step wraps
in `parallel()`, still runs on all threads. Setting the thread count costs ~0.2 us. Only with
PyTorch's OpenMP backend: the native thread pool cannot change its size once started (it warns instead).
"""

from __future__ import annotations

import functools
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from tnlm.devices import available_bytes
from tnlm.ops import decode_kernels

LAYOUTS = ("auto", "rows", "columns", "packed", "panels")
LAYOUT = os.environ.get("TNLM_DECODE_LAYOUT", "auto")
_ROUNDS = 10
MAX_COPY_FRACTION = 0.25  # derived copies take at most this share of the memory available at the start


class Watch:
    """Whether the parameters of some modules are still the ones a derived copy was made from: the same
    tensor objects (not replaced, as load_state_dict(assign=True) or a new Parameter does), on the same
    memory (not reassigned through .data) and not changed in place (their version counter, which an
    optimizer step or a copying load_state_dict moves; an inference tensor has none, and one changed in
    place inside inference mode is not seen). `names`: the parameters watched (None: all of them);
    buffers=True watches every buffer too. The watch holds weak references, so it keeps no replaced
    weights alive, and a dead one never matches. `current()` costs well under a microsecond a tensor:
    a decode step asks it for every layer."""

    def __init__(self, modules: Sequence[nn.Module], names: Sequence[str] | None = ("weight", "bias"), *,
                 buffers: bool = False) -> None:  # fmt: skip
        self._slots = []
        for m in modules:
            for store in (m._parameters, m._buffers) if buffers else (m._parameters,):
                for name in store if names is None or store is m._buffers else names:
                    if name not in store:
                        continue
                    t = store[name]
                    if t is None:  # an absent tensor (a layer without bias) stays absent
                        self._slots.append((store, name, None, 0, False, 0))
                        continue
                    versioned = not t.is_inference()
                    self._slots.append((store, name, weakref.ref(t), t.data_ptr(), versioned, t._version if versioned else 0))

    def current(self) -> bool:
        for store, name, ref, ptr, versioned, version in self._slots:
            if ref is None:
                if store.get(name) is not None:
                    return False
                continue
            t = ref()
            if t is None or store.get(name) is not t or t.data_ptr() != ptr or (versioned and t._version != version):
                return False
        return True


def _packed_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


class _Threads(threading.local):
    full = 0  # inside serial(): the thread count products run with; 0 outside


_THREADS = _Threads()  # per Python thread, as OpenMP's thread count is (a server steps on its own thread)


@functools.cache
def _openmp() -> bool:
    return "parallel backend: OpenMP" in torch.__config__.parallel_info()


@contextmanager
def serial() -> Iterator[None]:
    """Run the operators inside on one thread, except products and parallel() calls (module docstring)."""
    full = torch.get_num_threads()
    if full == 1 or _THREADS.full or not _openmp():  # nothing to save, already inside, or not possible
        yield
        return
    _THREADS.full = full
    torch.set_num_threads(1)
    try:
        yield
    finally:
        _THREADS.full = 0
        torch.set_num_threads(full)


def parallel(fn: Callable, *args, **kwargs):
    """fn(*args, **kwargs) on all threads, also inside serial()."""
    full = _THREADS.full
    if not full:
        return fn(*args, **kwargs)
    torch.set_num_threads(full)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(1)


@functools.cache
def dispatch_seconds() -> float:
    """What one small PyTorch operator costs on this machine, dispatch and all (median of 200 adds of
    8 numbers on one thread; measured once per process, ~1 ms): 2-5 us on the CPUs here."""
    x = torch.ones(8)
    times = []
    with serial():
        for _ in range(200):
            t0 = time.perf_counter()
            torch.add(x, x)
            times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def threads() -> int:
    """The thread count products run with: all of them, also inside serial()."""
    return _THREADS.full or torch.get_num_threads()


def _bucket(rows: int) -> int:
    return 1 << max(rows - 1, 0).bit_length()  # 1, 2, 4, 8, 16, ...


class Layouts:
    """What the linear products of one FastStep share: the measured layout per (weight shapes, dtype,
    device, bias, batch-size bucket), so that layers of one shape are measured once (a 30-layer model
    pauses for its ~6 shapes, not 200 layers), and a budget for the derived copies: at most twice the
    weights (one copy per layout for a batch-1 and a batch-8 choice) and a quarter of the memory
    available when the step was built (MAX_COPY_FRACTION). `used` is the bytes of the copies kept now."""

    def __init__(self, weight_bytes: int) -> None:
        available = available_bytes(torch.device("cpu"))
        self.limit = 2 * weight_bytes
        if available is not None:
            self.limit = min(self.limit, int(available * MAX_COPY_FRACTION))
        self.used = 0
        self.choice: dict[tuple, str] = {}


class Linears:
    """nn.Linear layers that read the same input, applied to x (rows, in) in the layout measured fastest
    for the number of rows (LAYOUT). Returns the output (rows, out) of a single layer, or a tuple of
    each layer's output (views of one product in a derived layout)."""

    def __init__(self, modules: Sequence[nn.Linear], shared: Layouts, *, favour_panels: tuple[float, float] = (1.0, 0.0)) -> None:
        with_bias = {m.bias is not None for m in modules}
        if len(with_bias) != 1 or len({m.in_features for m in modules}) != 1:
            raise ValueError("Linears fuses layers of one input width that all have a bias or none")
        self.modules, self.shared = tuple(modules), shared
        # (factor, seconds): the panel layout wins a measurement when it takes at most factor times the other's
        # time plus seconds; more than (1, 0) where a kernel that fuses a whole layer needs it (fast.py)
        self.favour_panels = favour_panels
        self.sizes = [m.out_features for m in modules]
        self._copies: dict[str, tuple[Watch, torch.Tensor, torch.Tensor | None]] = {}  # layout -> (made from, W, b)
        self._choice: dict[int, str] = {}  # batch-size bucket -> layout used
        self._bound: dict[int, tuple[str, Watch, Callable]] = {}  # bucket -> (LAYOUT, made from, product)

    def _weight_bytes(self) -> int:
        return sum(m.weight.nbytes for m in self.modules)

    def __call__(self, x: torch.Tensor):
        bucket = _bucket(x.shape[0])
        bound = self._bound.get(bucket)
        if bound is None or bound[0] != LAYOUT or not bound[1].current():
            watch = Watch(self.modules)
            bound = self._bound[bucket] = (LAYOUT, watch, parallel(self._bind, x, bucket))
        return parallel(bound[2], x)

    def panels(self, rows: int) -> decode_kernels.Product | None:
        """The weights as decode_kernels.pack panels (and the bias), when the product bound for this many
        rows is the panel kernel on the current weights; else None (another layout, the weights changed
        since, or no call with this many rows yet). A fused kernel then computes the product itself."""
        bound = self._bound.get(_bucket(rows))
        if bound is None or getattr(bound[2], "panels", None) is None or bound[0] != LAYOUT or not bound[1].current():
            return None
        return bound[2].panels

    def _bind(self, x: torch.Tensor, bucket: int) -> Callable:
        """The product for this bucket: the layout chosen (measured once per shape), its copy made."""
        layout = LAYOUT if LAYOUT != "auto" else self._choice.get(bucket)
        if layout is None:
            w = self.modules[0].weight
            key = (tuple(m.weight.shape for m in self.modules), w.dtype, w.device, self.modules[0].bias is None, bucket,
                   self.favour_panels)  # fmt: skip
            layout = self.shared.choice.get(key) or self.shared.choice.setdefault(key, self._measure(x))
            if layout != "rows" and self._copy(layout) is None:  # no room for this layer's copy
                layout = "rows"
            self._choice[bucket] = layout
            for unused in set(self._copies) - set(self._choice.values()):
                self._drop(unused)
        return self._product(layout, x)

    def _product(self, layout: str, x: torch.Tensor) -> Callable:
        if layout in ("packed", "panels") and (x.dtype != torch.float32 or x.device.type != "cpu"):
            layout = "rows"  # CPU float32 layouts (a forced TNLM_DECODE_LAYOUT may ask for them elsewhere)
        elif layout == "panels" and not decode_kernels.available():
            layout = "rows"
        kept = self._copy(layout) if layout != "rows" else None
        if kept is None:  # the plain layout (or over the budget: the copy was dropped)
            mods = self.modules
            if len(mods) == 1:
                return lambda x, m=mods[0]: F.linear(x, m.weight, m.bias)
            return lambda x: tuple(F.linear(x, m.weight, m.bias) for m in mods)
        w, b = kept
        if layout == "panels":
            fn = decode_kernels.product(w, sum(self.sizes), b)
        elif layout == "packed":
            fn = lambda x: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")  # noqa: E731
        elif b is None:
            fn = lambda x: torch.mm(x, w)  # noqa: E731
        else:
            fn = lambda x: torch.addmm(b, x, w)  # noqa: E731
        if len(self.modules) > 1:
            sizes, whole = self.sizes, fn
            fn = lambda x: whole(x).split(sizes, -1)  # noqa: E731
        fn.panels = decode_kernels.Product(w, b, sum(self.sizes)) if layout == "panels" else None  # for panels()
        return fn

    def _drop(self, layout: str) -> None:
        _, w, b = self._copies.pop(layout)
        self.shared.used -= _copy_bytes(w, b)

    def _copy(self, layout: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The weights (and biases) in a derived layout, concatenated over the layers, made (or remade
        after the weights changed) if the budget allows."""
        kept = self._copies.get(layout)
        if kept is not None and kept[0].current():
            return kept[1], kept[2]
        if kept is not None:
            self._drop(layout)
        if LAYOUT == "auto" and self.shared.used + self._weight_bytes() > self.shared.limit:
            return None
        w = torch.cat([m.weight.detach() for m in self.modules]) if len(self.modules) > 1 else self.modules[0].weight.detach()
        b = None
        if self.modules[0].bias is not None:
            b = torch.cat([m.bias.detach() for m in self.modules])
        if layout == "columns":
            w = w.t().contiguous()
        elif layout == "panels":
            w = decode_kernels.pack(w)
        else:
            w = torch.ops.mkldnn._reorder_linear_weight(w, 8)
        self._copies[layout] = (Watch(self.modules), w, b)
        self.shared.used += _copy_bytes(w, b)
        return w, b

    def _candidates(self, x: torch.Tensor) -> list[str]:
        if x.device.type != "cpu":
            return ["rows"]
        if not self._copies and self.shared.used + self._weight_bytes() > self.shared.limit:
            return ["rows"]
        if x.dtype != torch.float32:
            return ["rows", "columns"]
        return ["rows", "columns"] + ["packed"] * _packed_available() + ["panels"] * decode_kernels.available()

    def _measure(self, x: torch.Tensor) -> str:
        """The layout with the fastest single call for this input: the candidates meet in turn, each pair
        timed interleaved (best of _ROUNDS), the loser's copy dropped at once, so that at most two copies
        of a weight exist while it is measured (the LM head of the issue-20 model: 131 MB, not 196)."""
        candidates = self._candidates(x)
        best = candidates[0]
        for challenger in candidates[1:]:
            pair = (best, challenger)
            products = {layout: self._product(layout, x) for layout in pair}
            fastest = dict.fromkeys(pair, float("inf"))
            for r in range(_ROUNDS + 1):
                for layout in pair:
                    t0 = time.perf_counter()
                    products[layout](x)
                    if r:  # the first round warms up each candidate
                        fastest[layout] = min(fastest[layout], time.perf_counter() - t0)
            if "panels" in fastest:
                factor, seconds = self.favour_panels
                fastest["panels"] = (fastest["panels"] - seconds) / factor
            loser = max(pair, key=fastest.__getitem__)
            best = challenger if loser == best else best
            del products
            if loser in self._copies and loser not in self._choice.values():
                self._drop(loser)
        return best


def _copy_bytes(w: torch.Tensor, b: torch.Tensor | None) -> int:
    return w.nbytes + (b.nbytes if b is not None else 0)
