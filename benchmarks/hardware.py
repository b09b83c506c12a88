"""The machine's measured rates that the inference benchmarks compare against (float32, this process's
thread count): the matrix-vector rate (GB/s of weights streamed through one-row products, the bound of
a batch-1 decode step) and the matrix-product rate (GFLOP/s of large products, the bound of a prefill).

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
    """Bytes/s of float32 weights read by one-row products x @ W^T (F.linear, as a decode step does),
    cycling through MATVEC_BYTES of distinct matrices so that nothing is served from cache."""
    rows, cols = MATVEC_SHAPE
    mats = [torch.randn(rows, cols) for _ in range(max(1, MATVEC_BYTES // (rows * cols * 4)))]
    x = torch.randn(1, cols)

    def sweep() -> None:
        for w in mats:
            torch.nn.functional.linear(x, w)

    return sum(w.numel() * 4 for w in mats) / _best(sweep, rounds=rounds, reps=2)


@torch.inference_mode()
def matmul_rate(*, n: int = 1024, rounds: int = 5) -> float:
    """FLOP/s of float32 (n x n) @ (n x n) products (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    return 2 * n**3 / _best(lambda: torch.mm(a, b, out=out), rounds=rounds, reps=4)


def main() -> None:
    print(f"{torch.get_num_threads()} threads: matrix-vector {matvec_rate() / 1e9:.1f} GB/s, "
          f"matrix product {matmul_rate() / 1e9:.1f} GFLOP/s (float32)")  # fmt: skip


if __name__ == "__main__":
    main()
