"""Prompt processing (prefill) on the CPU: time to first token, FLOP rate against the measured float32
matrix-product rate, and peak memory, for TransNormerLLM vs tnlm's Transformer vs Hugging Face Llama
(SDPA) of the same shape, side by side in one run.

For each (model, prompt length) a fresh child process builds the model, warms up on a prompt of up to 2048 tokens,
then prefills a random prompt --rounds times, and more for a short prompt until the timed prefills
add up to --min-seconds (timeit's autorange: a 0.1 s prefill gets ~20 tries, not 3, so one busy moment
cannot decide its cell), at most MAX_ROUNDS; half a second apart and each after the same warm-up (a
round starts hot, as the matrix-product rate it is compared with is measured hot: measured here, a
512-token prefill right after half a second idle took up to 20% longer), each through a new decoding
state as generate() does:
tnlm's models with FastDecodeState (the prompt in chunks of --chunk tokens, logits of the last
position only), HF Llama with one forward (logits_to_keep=1). "TTFT" is the best round's time
(timeit's rule: slower rounds are other processes interfering); the first token is the argmax of the
logits it returns. "peak MB" is the child's peak resident memory (ru_maxrss), and "over model" is that
peak minus the memory after building the model and warming up: what the prompt itself costs.

FLOPs are the multiply-adds (x2) of the matrix products each model actually runs: 2 T P for the
weight matrices (P: parameters of the blocks' linear layers; the LM head for one position), plus
attention: causal softmax attention 2 T^2 d per layer (QK^T and PV over the lower triangle), and for
Lightning Attention, per token and layer, 2 C (Dk + Dv) H inside its block of C = 64 tokens and
4 Dk Dv H for the state (TransNormer's LRPE layer has Dk = 2 head_dim). The rate is FLOPs / TTFT; the
matrix-product rate is measured (benchmarks/hardware.py, same threads) before and after the cells, and
the higher is used, so that a busy moment during one measurement cannot flatter the percentages.
"FLOPs llama/tnl" is the speed ratio the two would show at equal FLOP rates: the arithmetic's share of
the speedup. A measured ratio above it means TransNormer runs at a higher FLOP rate than Llama.

Every child process keeps freed buffers in its heap as the `tnlm` command does (tnlm.devices.
tune_allocator; all three models alike), and OpenMP's wait policy is --wait-policy's (waitpolicy.py).

    python benchmarks/prefill.py                          # lengths 512..32768: many minutes on 2 cores
    python benchmarks/prefill.py --lengths 512 2048       # quick look

Shape (issue 20): d=512, 4 layers, 8 heads of 64, FFN 1408, vocab 32000, tied embeddings, float32.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import time
from pathlib import Path

import waitpolicy

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("tnl", "transformer", "hf-llama")
SHAPE = dict(d=512, layers=4, heads=8, ffn=1408, vocab=32000)
LENGTHS = [512, 1024, 2048, 4096, 8192, 16384, 32768]
BLOCK = 64  # tnlm.ops.lightning.chunk.BLOCK


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def prefill_flops(kind: str, model, T: int, shape: dict) -> float:
    """Matrix-product FLOPs of one prefill of T tokens (see the module docstring)."""
    import torch

    d, L, H, V = shape["d"], shape["layers"], shape["heads"], shape["vocab"]
    head = model.get_output_embeddings().weight
    blocks = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight is not head)
    flops = 2.0 * T * blocks + 2.0 * d * V
    if kind == "tnl":
        hd = d // H
        lrpe = [bool(x) for x in model.config.linear_use_lrpe_list]
        for layer in range(L):
            dk = 2 * hd if lrpe[layer] else hd
            flops += T * (2.0 * BLOCK * (dk + hd) * H + 4.0 * dk * hd * H)
    else:
        flops += 2.0 * T * T * d * L
    return flops


WARMUP = 2048
MAX_ROUNDS = 20


def measure(kind: str, T: int, *, shape: dict, rounds: int, min_seconds: float, chunk: int, threads: int) -> dict:
    """Runs in a child process: warm up, then at least `rounds` timed prefills of T random tokens, more
    (up to MAX_ROUNDS) until they add up to `min_seconds`."""
    import torch

    from decode import _make_model, _release_freed_memory
    from tnlm.generation import DecodeState, FastDecodeState

    torch.set_num_threads(threads)
    model = _make_model(kind, shape)
    new = (lambda: DecodeState(model)) if kind == "hf-llama" else (lambda: FastDecodeState(model))
    ids = torch.randint(8, shape["vocab"], (1, T), generator=torch.Generator().manual_seed(T))
    mask = torch.ones_like(ids)
    # warm-up: first-call allocations and tables, at the working size of the timed prefills (a prompt up to
    # WARMUP tokens: a chunk's activations, a short prompt whole), as in a process that has served prompts before
    warm = min(T, WARMUP)
    chunk = None if kind == "hf-llama" else chunk

    def warm_up() -> None:
        new().prefill(ids[:, :warm], mask[:, :warm], chunk_size=chunk)

    warm_up()
    _release_freed_memory()
    base_mb = _rss_mb()
    times = []
    while len(times) < rounds or (sum(times) < min_seconds and len(times) < MAX_ROUNDS):
        if times:  # rounds apart in time, each starting hot, as the matrix-product rate it is compared with is measured
            time.sleep(0.5)
            warm_up()
        state = new()
        t0 = time.perf_counter()
        first = state.prefill(ids, mask, chunk_size=chunk).argmax(-1)
        times.append(time.perf_counter() - t0)
        del state, first
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    flops = prefill_flops(kind, model, T, shape)
    best = min(times)
    return dict(model=kind, length=T, rounds=len(times), ttft_s=best, ttft_median_s=sorted(times)[len(times) // 2],
                flops=flops, gflops=flops / best / 1e9, peak_rss_mb=peak, base_rss_mb=base_mb,
                over_model_mb=peak - base_mb)  # fmt: skip


def _run_cell(args: tuple) -> dict:
    from tnlm.devices import tune_allocator

    tune_allocator()  # as the `tnlm` command does at start, for every model measured
    kind, T, kwargs = args
    return measure(kind, T, **kwargs)


def _measure_rate(threads: int) -> float:
    import torch

    from hardware import matmul_rate

    torch.set_num_threads(threads)
    return matmul_rate()


def run_all(models: list[str], lengths: list[int], **kwargs) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for T in lengths:
        for kind in models:
            with ctx.Pool(1, maxtasksperchild=1) as pool:
                row = pool.apply(_run_cell, ((kind, T, kwargs),))
            print(f"  {kind:12s} {T:6d}: TTFT {row['ttft_s']:8.3f} s, {row['gflops']:6.1f} GFLOP/s, "
                  f"peak {row['peak_rss_mb']:6.0f} MB (+{row['over_model_mb']:.0f} over the model)", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def table(rows: list[dict], models: list[str], rate: float) -> str:
    by = {(r["model"], r["length"]): r for r in rows}
    short = {"tnl": "tnl", "transformer": "tfm", "hf-llama": "llama"}
    names = " ".join(f"{short[m]:>7}" for m in models)
    head = (f"{'length':>6} | TTFT s: {names} | llama/tnl tfm/tnl | FLOPs llama/tnl | % of matmul rate: {names} | "
            f"peak MB: {names} | over model MB: {names}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for T in sorted({r["length"] for r in rows}):
        cells = [by.get((m, T)) for m in models]

        def col(fn, cells=cells) -> str:
            return " ".join(f"{fn(c) if c else '-':>7}" for c in cells)

        def ratio(other: str, T=T) -> str:
            a, b = by.get((other, T)), by.get(("tnl", T))
            return f"{a['ttft_s'] / b['ttft_s']:.2f}x" if a and b else "-"

        def work(T=T) -> str:
            a, b = by.get(("hf-llama", T)), by.get(("tnl", T))
            return f"{a['flops'] / b['flops']:.2f}x" if a and b else "-"

        lines.append(f"{T:>6} | TTFT s: {col(lambda c: format(c['ttft_s'], '.3f'))} | {ratio('hf-llama'):>9} "
                     f"{ratio('transformer'):>7} | {work():>15} | % of matmul rate: {col(lambda c: format(100 * c['gflops'] * 1e9 / rate, '.0f') + '%')} | "
                     f"peak MB: {col(lambda c: format(c['peak_rss_mb'], '.0f'))} | "
                     f"over model MB: {col(lambda c: format(c['over_model_mb'], '.0f'))}")  # fmt: skip
    return "\n".join(lines)


def targets(rows: list[dict], lengths: list[int], *, rate: float, chunk: int) -> list[tuple[str, float, bool]]:
    by = {(r["model"], r["length"]): r for r in rows}
    have = {r["model"] for r in rows}
    out = []
    if {"tnl", "hf-llama"} <= have:
        worst = min(by[("hf-llama", T)]["ttft_s"] / by[("tnl", T)]["ttft_s"] for T in lengths)
        out.append(("HF Llama / TNL time to first token, worst length (target >= 1)", worst, worst >= 1))
        for T, goal in ((16384, 3.5), (32768, 6.0)):
            if T in lengths:
                r = by[("hf-llama", T)]["ttft_s"] / by[("tnl", T)]["ttft_s"]
                out.append((f"HF Llama / TNL time to first token at {T} (target >= {goal})", r, r >= goal))
    if "tnl" in have:
        worst = min(by[("tnl", T)]["gflops"] * 1e9 / rate for T in lengths)
        out.append(("TNL prefill FLOP rate / matrix-product rate, worst length (target >= 0.70)", worst, worst >= 0.7))
        beyond = [by[("tnl", T)]["peak_rss_mb"] for T in lengths if T >= chunk]
        if len(beyond) > 1:
            spread = max(beyond) / min(beyond)
            out.append((f"TNL peak memory beyond the chunk ({chunk}), largest / smallest (flat: <= 1.05)",
                        spread, spread <= 1.05))  # fmt: skip
    return out


def plot(rows: list[dict], models: list[str], rate: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for kind, color in zip(MODELS, ("tab:blue", "tab:orange", "tab:green")):
        mine = sorted((r for r in rows if r["model"] == kind), key=lambda r: r["length"])
        if kind not in models or not mine:
            continue
        x = [r["length"] for r in mine]
        axes[0].plot(x, [r["ttft_s"] for r in mine], marker="o", color=color, label=kind)
        axes[1].plot(x, [100 * r["gflops"] * 1e9 / rate for r in mine], marker="o", color=color, label=kind)
        axes[2].plot(x, [r["peak_rss_mb"] for r in mine], marker="o", color=color, label=kind)
    for ax, label in zip(axes, ("time to first token (s)", "% of measured matmul rate", "process peak memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    fig.suptitle("Prefill on CPU, float32: TransNormerLLM vs Transformer vs HF Llama (SDPA), same shape", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=waitpolicy.positive_int, nargs="+", default=LENGTHS)
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--rounds", type=waitpolicy.positive_int, default=3,
                   help="timed prefills per cell at least; the best is reported")  # fmt: skip
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help=f"more rounds (at most {MAX_ROUNDS}) until a cell's timed prefills add up to this")  # fmt: skip
    p.add_argument("--chunk", type=waitpolicy.positive_int, default=None,
                   help="prefill chunk of tnlm's models (default: FastDecodeState's)")  # fmt: skip
    p.add_argument("--threads", type=waitpolicy.positive_int, default=2)
    p.add_argument("--out", type=Path, default=None, help="default benchmarks/results/prefill[-POLICY]")
    waitpolicy.add_argument(p)
    args = p.parse_args()
    policy = waitpolicy.apply(args.wait_policy)  # before any child process starts
    args.out = args.out or RESULTS / ("prefill" + waitpolicy.suffix(args.wait_policy))
    waitpolicy.output_folder(p, args.out)
    from tnlm.generation.fast import PREFILL_CHUNK

    chunk = args.chunk or PREFILL_CHUNK
    rate = waitpolicy.in_child(_measure_rate, args.threads)
    print(f"shape {SHAPE}, {args.threads} threads, best of {args.rounds}+ prefills per cell (more until {args.min_seconds:g} s "
          f"of prefills, at most {MAX_ROUNDS}), tnlm chunks of {chunk}, "
          f"matrix-product rate before the cells {rate / 1e9:.1f} GFLOP/s, {policy}")  # fmt: skip
    rows = run_all(args.models, args.lengths, shape=SHAPE, rounds=args.rounds, min_seconds=args.min_seconds, chunk=chunk,
                   threads=args.threads)  # fmt: skip
    after = waitpolicy.in_child(_measure_rate, args.threads)  # again: a busy moment must not flatter the FLOP rates
    print(f"matrix-product rate measured again after the cells: {after / 1e9:.1f} GFLOP/s; the rates use the higher")
    rate = max(rate, after)
    text = table(rows, args.models, rate)
    checks = targets(rows, args.lengths, rate=rate, chunk=chunk)
    print("\n" + text + "\n")
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value:.2f}")
    meta = dict(shape=SHAPE, threads=args.threads, rounds=args.rounds, min_seconds=args.min_seconds, chunk=chunk,
                matmul_rate_gflops=rate / 1e9, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), cpu=platform.processor() or platform.machine(),
                torch=__import__("torch").__version__)  # fmt: skip
    record = dict(meta=meta, rows=rows, table=text, targets=[dict(name=n, value=v, met=ok) for n, v, ok in checks])
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    plot(rows, args.models, rate, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
