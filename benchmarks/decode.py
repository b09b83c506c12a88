"""Decoding speed and memory against context length: TransNormerLLM vs tnlm's KV-cache Transformer vs
Hugging Face LlamaForCausalLM, all of the same shape, side by side in one run.

For each (model, context) a fresh child process builds the model, prefills `context` random tokens (in
chunks, through tnlm's DecodeState, as generate() does), then decodes greedily one token at a time in
--rounds rounds of --new-tokens steps, a second apart, timing every step. "ms/token" is the best round's
mean (timeit's rule: on a shared machine the slower rounds are other processes interfering); the JSON
also holds the median, mean and fastest single step. The child's peak resident memory (ru_maxrss) is
that cell's process peak memory.

    python benchmarks/decode.py                       # contexts 256..32768, a few minutes on 2 cores
    python benchmarks/decode.py --contexts 256 1024   # quick look

Shape: the tiny presets' (tnl-tiny / transformer-tiny): d=128, 4 layers, 4 heads of 32, FFN 352,
vocab 8192, tied embeddings, float32; HF Llama gets the same numbers. The shape is set by the
Transformers' prefill, which is quadratic: at 32768 tokens it is ~2 T^2 d L multiply-adds, a minute or two
per model on 2 shared cores, so the whole table takes several minutes. A decode step still does real work:
each token reads 2*T*d floats of KV cache per layer against ~12*d^2 weights, so the Transformer's cost
per token grows ~T/(6d) times its fixed part; a wider model needs longer contexts to show the same gap.
Prefill runs in chunks of --chunk tokens (default 256, the smallest context) for every model, so a
TransNormer prefill has the same working set at every context.
"Decode MB" is the resident memory while decoding (after returning freed prefill buffers to the OS).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from pathlib import Path

# Sleeping, not spinning, OpenMP workers: on a shared 2-core machine spinning threads turn a 5 ms decode
# step into 100 ms whenever another process runs. Set before torch loads; the children inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ("tnl", "transformer", "hf-llama")
SHAPE = dict(d=128, layers=4, heads=4, ffn=352, vocab=8192)


def build(kind: str, shape: dict):
    """The three models with identical width, depth, heads, FFN width, vocab and tied embeddings."""
    from tnlm.models.registry import PRESETS

    d, L, H, F, V = (shape[k] for k in ("d", "layers", "heads", "ffn", "vocab"))
    if kind == "tnl":
        return PRESETS["tnl-tiny"].config(dict(decoder_embed_dim=d, hidden_dim=d, decoder_layers=L,
            decoder_attention_heads=H, glu_dim=F, vocab_size=V, linear_use_lrpe_list=[1] + [0] * (L - 1)))  # fmt: skip
    common = dict(hidden_size=d, num_hidden_layers=L, num_attention_heads=H, num_key_value_heads=H,
                  intermediate_size=F, vocab_size=V, max_position_embeddings=65536,
                  tie_word_embeddings=True)  # fmt: skip
    if kind == "transformer":
        return PRESETS["transformer-tiny"].config(common)
    from transformers import LlamaConfig

    return LlamaConfig(**common, attn_implementation="sdpa")


def _make_model(kind: str, shape: dict):
    import torch
    from transformers import AutoModelForCausalLM

    import tnlm.models  # noqa: F401  (registers the tnlm families)

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(build(kind, shape)).eval()


def _timed_steps(state, logits, n: int) -> tuple[list[float], list[float], object]:
    """n greedy decode steps: (seconds per step, resident MB after each step, last logits)."""
    steps, rss = [], []
    for _ in range(n):
        tok = logits.argmax(-1)
        t0 = time.perf_counter()
        logits = state.step(tok)
        steps.append(time.perf_counter() - t0)
        rss.append(_rss_mb())
    return steps, rss, logits


def measure(kind: str, context: int, *, shape: dict, new_tokens: int, rounds: int, chunk: int, threads: int) -> dict:
    """Runs in a child process: prefill, then `rounds` rounds of `new_tokens` timed decode steps, a second
    apart, so that a burst of work from other processes cannot decide a cell on its own."""
    import torch

    from tnlm.generation import DecodeState

    torch.set_num_threads(threads)
    model = _make_model(kind, shape)
    ids = torch.randint(8, shape["vocab"], (1, context), generator=torch.Generator().manual_seed(context))
    state = DecodeState(model)
    t0 = time.perf_counter()
    logits = state.prefill(ids, torch.ones_like(ids), chunk_size=chunk)
    prefill_s = time.perf_counter() - t0
    _release_freed_memory()
    steps, rss, round_means = [], [], []
    for r in range(rounds):
        time.sleep(1.0 if r else 0.0)
        round_steps, round_rss, logits = _timed_steps(state, logits, new_tokens)
        steps, rss = steps + round_steps, rss + round_rss
        round_means.append(statistics.fmean(round_steps))
    return dict(
        model=kind, context=context, prefill_s=prefill_s,
        ms_per_token=1000 * min(round_means), ms_per_token_median=1000 * statistics.median(steps),
        ms_per_token_mean=1000 * statistics.fmean(steps), ms_per_token_min=1000 * min(steps),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, decode_rss_mb=max(rss),
        state_mb=(state.nbytes() if kind != "hf-llama" else _dynamic_cache_bytes(state.cache)) / 2**20,
    )  # fmt: skip


def _dynamic_cache_bytes(cache) -> int:
    """Bytes of a transformers DynamicCache (which does not report them): every layer's keys and values."""
    return sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))


def _rss_mb() -> float:
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _release_freed_memory() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise), so RSS shows what is in use."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _run_cell(args: tuple) -> dict:
    kind, context, kwargs = args
    return measure(kind, context, **kwargs)


def run_all(contexts: list[int], **kwargs) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for context in contexts:
        for kind in MODELS:
            with ctx.Pool(1, maxtasksperchild=1) as pool:  # a fresh process: its peak memory is this cell's
                row = pool.apply(_run_cell, ((kind, context, kwargs),))
            print(f"  {kind:12s} {context:6d}: {row['ms_per_token']:8.2f} ms/token, prefill {row['prefill_s']:7.1f} s, "
                  f"peak {row['peak_rss_mb']:7.0f} MB", flush=True)  # fmt: skip
            rows.append(row)
    return rows


def table(rows: list[dict], contexts: list[int]) -> str:
    by = {(r["model"], r["context"]): r for r in rows}
    head = (f"{'context':>7} | {'ms/token: tnl':>13} {'tfm':>7} {'llama':>7} | {'tfm/tnl':>7} {'llama/tnl':>9} | "
            f"{'peak MB: tnl':>12} {'tfm':>5} {'llama':>5} | {'decode MB: tnl':>14} {'tfm':>5} {'llama':>5} | "
            f"{'state MB: tnl':>13} {'tfm':>6}")  # fmt: skip
    lines = [head, "-" * len(head)]
    for c in contexts:
        t, f, h = by[("tnl", c)], by[("transformer", c)], by[("hf-llama", c)]
        lines.append(
            f"{c:>7} | {t['ms_per_token']:>13.2f} {f['ms_per_token']:>7.2f} {h['ms_per_token']:>7.2f} | "
            f"{f['ms_per_token'] / t['ms_per_token']:>6.1f}x {h['ms_per_token'] / t['ms_per_token']:>8.1f}x | "
            f"{t['peak_rss_mb']:>12.0f} {f['peak_rss_mb']:>5.0f} {h['peak_rss_mb']:>5.0f} | "
            f"{t['decode_rss_mb']:>14.0f} {f['decode_rss_mb']:>5.0f} {h['decode_rss_mb']:>5.0f} | "
            f"{t['state_mb']:>13.2f} {f['state_mb']:>6.1f}"
        )
    return "\n".join(lines)


def _ratio(by: dict, a: tuple, b: tuple, key: str) -> float:
    return by[a][key] / by[b][key]


def targets(rows: list[dict], contexts: list[int]) -> list[tuple[str, float, bool]]:
    """Each speed target is checked on the best round's mean (timeit's rule: slower repeats are other
    processes interfering) and on the median over every step of every round."""
    by = {(r["model"], r["context"]): r for r in rows}
    out = []
    for key, est in (("ms_per_token", "best round"), ("ms_per_token_median", "median of all steps")):
        if 256 in contexts and 32768 in contexts:
            r = _ratio(by, ("tnl", 32768), ("tnl", 256), key)
            out.append((f"TNL ms/token at 32768 / at 256, {est} (target <= 1.2)", r, r <= 1.2))
        if 16384 in contexts:
            r = _ratio(by, ("transformer", 16384), ("tnl", 16384), key)
            out.append((f"Transformer / TNL ms/token at 16384, {est} (target >= 5)", r, r >= 5))
    tnl = [by[("tnl", c)] for c in contexts]
    for key, what in (("decode_rss_mb", "decoding memory"), ("peak_rss_mb", "process peak memory")):
        mb = [r[key] for r in tnl]
        spread = max(mb) / min(mb)
        out.append((f"TNL {what}, largest / smallest over contexts (flat: <= 1.05)", spread, spread <= 1.05))
    states = {round(r["state_mb"], 6) for r in tnl}
    out.append(("TNL decoding-state MB (one value = independent of context)", max(states), len(states) == 1))
    return out


def plot(rows: list[dict], contexts: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for kind, color in zip(MODELS, ("tab:blue", "tab:orange", "tab:green")):
        mine = [r for r in rows if r["model"] == kind]
        ax1.plot(contexts, [r["ms_per_token"] for r in mine], marker="o", color=color, label=f"{kind} (best round)")
        ax1.plot(contexts, [r["ms_per_token_median"] for r in mine], marker=".", linestyle=":", color=color,
                 label=f"{kind} (median of all steps)")  # fmt: skip
        ax2.plot(contexts, [r["peak_rss_mb"] for r in mine], marker="o", color=color, label=f"{kind} peak")
        ax2.plot(contexts, [r["decode_rss_mb"] for r in mine], marker="x", linestyle="--", color=color,
                 label=f"{kind} decoding")  # fmt: skip
    for ax, label in ((ax1, "ms per generated token"), (ax2, "resident memory (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length (tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Decoding on CPU, float32: TransNormerLLM vs KV-cache Transformer vs HF Llama (same shape)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--contexts", type=int, nargs="+", default=[256, 1024, 4096, 16384, 32768])
    p.add_argument("--new-tokens", type=int, default=32, help="timed decode steps per round")
    p.add_argument("--rounds", type=int, default=6,
                   help="rounds per cell, a second apart; the best round's mean is reported")  # fmt: skip
    p.add_argument("--chunk", type=int, default=256, help="prefill chunk size (all models)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=RESULTS / "decode")
    args = p.parse_args()
    kwargs = dict(shape=SHAPE, new_tokens=args.new_tokens, rounds=args.rounds, chunk=args.chunk, threads=args.threads)
    print(f"shape {SHAPE}, {args.threads} threads, {args.rounds} x {args.new_tokens} decode steps per cell, "
          f"prefill chunks of {args.chunk}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    rows = run_all(args.contexts, **kwargs)
    text = table(rows, args.contexts)
    checks = targets(rows, args.contexts)
    print("\n" + text + "\n")
    for name, value, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}: {value:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(shape=SHAPE, threads=args.threads, omp_wait_policy=os.environ["OMP_WAIT_POLICY"],
                new_tokens=args.new_tokens, rounds=args.rounds, chunk=args.chunk,
                cpu=platform.processor() or platform.machine(), torch=__import__("torch").__version__)  # fmt: skip
    record = dict(meta=meta, rows=rows, table=text, targets=[dict(name=n, value=v, met=ok) for n, v, ok in checks])
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    plot(rows, args.contexts, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
