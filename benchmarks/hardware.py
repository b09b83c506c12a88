"""The machine's measured rates that the inference benchmarks compare against (float32, this process's
thread count): the matrix-vector rate (GB/s of weights streamed through one-row products, the bound of
a batch-1 decode step: the fastest of the weight layouts a decode step may use, and never below the
rate at which the machine streams the same bytes through a plain sum) and the matrix-product rate
(GFLOP/s of large products, the bound of a prefill).

Each rate is the best of several rounds (timeit's rule: slower rounds are other processes interfering).
Used by benchmarks/decode.py and benchmarks/prefill.py; `python benchmarks/hardware.py` prints both.
"""

from __future__ import annotations

import time

import torch

# matrices much larger than any cache, so the matrix-vector rate is a DRAM-streaming rate
MATVEC_BYTES = 256 * 2**20
MATVEC_SHAPE = (4096, 2048)


def _best(fn, *, rounds: int, reps: int) -> float:
    """Fastest mean seconds per call over `rounds` rounds of `reps` calls (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


@torch.inference_mode()
def matvec_rate(*, rounds: int = 5) -> float:
    """Bytes/s of float32 weights read by one-row products, the fastest of the layouts a decode step may
    use (generation/layouts.py measures and picks per layer): x @ W^T on (out, in) rows (F.linear),
    x @ W on an input-major (in, out) copy, oneDNN's packed layout and tnlm's panel kernel; and at least the plain streaming
    read rate of the same bytes (a sum), which bounds any product whatever its kernel (the compiled step
    generates its own, and they read at about that rate). Cycles through MATVEC_BYTES of distinct
    matrices so that nothing is served from cache."""
    return max(matvec_rates(rounds=rounds).values())


@torch.inference_mode()
def matvec_rates(*, rounds: int = 5) -> dict[str, float]:
    """{"rows": bytes/s of F.linear(x, W), "columns": bytes/s of x @ W with W input-major, "packed": bytes/s
    of oneDNN's product on W in its packed layout for one row (where oneDNN is available), "panels": bytes/s
    of tnlm's panel kernel (ops/decode_kernels.py, where it builds), "read": bytes/s of W.sum(), a pure
    streaming read}."""
    from tnlm.ops import decode_kernels

    rows, cols = MATVEC_SHAPE
    count = max(1, MATVEC_BYTES // (rows * cols * 4))
    x = torch.randn(1, cols)
    products = {
        "rows": (lambda: torch.randn(rows, cols), torch.nn.functional.linear),
        "columns": (lambda: torch.randn(cols, rows), torch.mm),
    }
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        products["packed"] = (lambda: torch.ops.mkldnn._reorder_linear_weight(torch.randn(rows, cols), 1),
                              lambda x, w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""))  # fmt: skip
    if decode_kernels.available():
        products["panels"] = (lambda: decode_kernels.pack(torch.randn(rows, cols)),
                              lambda x, w: decode_kernels.linear(x, w, rows))  # fmt: skip
    products["read"] = (lambda: torch.randn(rows, cols), lambda x, w: w.sum())
    rates = {}
    for layout, (make, product) in products.items():
        mats = [make() for _ in range(count)]

        def sweep(mats=mats, product=product) -> None:
            for w in mats:
                product(x, w)

        rates[layout] = count * rows * cols * 4 / _best(sweep, rounds=rounds, reps=2)
        del mats
    return rates


@torch.inference_mode()
def matmul_rate(*, n: int = 1024, rounds: int = 5) -> float:
    """FLOP/s of float32 (n x n) @ (n x n) products (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return 2 * n**3 / _best(lambda: torch.mm(a, b, out=out), rounds=rounds, reps=4)


def main() -> None:
    mv = {k: f"{v / 1e9:.1f}" for k, v in matvec_rates().items()}
    packed = f", {mv['packed']} GB/s (oneDNN packed)" if "packed" in mv else ""
    packed += f", {mv['panels']} GB/s (tnlm panels)" if "panels" in mv else ""
    print(f"{torch.get_num_threads()} threads: matrix-vector {mv['rows']} GB/s (W rows), {mv['columns']} GB/s "
          f"(W input-major){packed}, streaming read {mv['read']} GB/s (sum), "
          f"matrix product {matmul_rate() / 1e9:.1f} GFLOP/s (float32)")  # fmt: skip


if __name__ == "__main__":
    main()
