"""Distributed training on CPU processes: step time and peak memory per rank for 1, 2 and 4 ranks under
FSDP2, tensor parallelism and sequence parallelism, and the longest TransNormer sequence that trains in
a fixed per-rank memory budget under sequence parallelism.

    python benchmarks/parallel_scaling.py                       # the full run (needs 4 idle cores x --threads)
    python benchmarks/parallel_scaling.py --quick               # tiny sizes, a minute: proves the script runs

Every measurement is a fresh `torchrun --standalone --nproc_per_node R` launch of this file in worker
mode (a plain process for R = 1), gloo, one mesh from tnlm.training.parallel, the trainer's own step
(forward, float32 cross-entropy, backward, clipping, AdamW) on the same fixed random global batch:

- scaling: the global batch (--batch x --seq-len tokens) is fixed (strong scaling); FSDP2 splits its
  rows, tensor parallelism its heads and feed-forward width, sequence parallelism every sequence. Step
  time is the fastest of --repeats steps after --warmup; memory is the peak resident set size of the
  process minus its size before the model was built (parameters, gradients, AdamW states, activations,
  communication buffers), the largest over the ranks.
- longest sequence (sp = R, batch 1): lengths grow geometrically (x --growth) from --start-len, one
  training step each, in one launch per R; the peak resident set only grows, so the peak after a length
  is that length's. The longest length whose peak stays within --budget-mib on every rank is reported;
  the target is linear growth with R.

Prints both tables and writes results/parallel_scaling.{json,png}. Memory is what the OS sees (ru_maxrss),
allocator slack included; CPU ranks share the machine's memory bandwidth, so the step-time ratios are a
lower bound of what separate machines (or GPUs) give.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
STRATEGIES = {"fsdp": "dp_shard", "tp": "tp", "sp": "sp"}
SHAPE = dict(decoder_embed_dim=256, hidden_dim=256, decoder_layers=4, decoder_attention_heads=8, glu_dim=768,
             linear_use_lrpe_list=[1, 0, 0, 0], vocab_size=4096)  # fmt: skip
QUICK_SHAPE = dict(decoder_embed_dim=64, hidden_dim=64, decoder_layers=2, decoder_attention_heads=4, glu_dim=128,
                   linear_use_lrpe_list=[1, 0], vocab_size=512)  # fmt: skip


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------------------------------- worker


class FixedBatches:
    """This data-parallel rank's rows of the same random global batch, every step."""

    def __init__(self, *, batch: int, T: int, vocab: int, rank: int, ranks: int) -> None:
        import torch

        ids = torch.randint(3, vocab, (batch, T + 1), generator=torch.Generator().manual_seed(0))
        rows = slice(rank * batch // ranks, (rank + 1) * batch // ranks)
        self.batch = {"input_ids": ids[rows, :-1].contiguous(), "labels": ids[rows, 1:].contiguous()}

    def __iter__(self):
        while True:
            yield self.batch


def make_trainer(world, *, shape: dict, batch: int, T: int, checkpointing: bool):
    import torch

    from tnlm.models import create_model
    from tnlm.training.config import OptimizerSection, TrainConfig
    from tnlm.training.optim import build_optimizer
    from tnlm.training.parallelize import parallelize
    from tnlm.training.trainer import Trainer

    config = TrainConfig()
    config.train.activation_checkpointing = checkpointing
    model = create_model("tnl-tiny", overrides=shape, seed=0).to(world.device).train()
    model = parallelize(model, world, config)
    optimizer = build_optimizer(model, OptimizerSection(lr=1e-4), device=world.device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    loader = FixedBatches(batch=batch, T=T, vocab=shape["vocab_size"], rank=world.coordinate("dp_shard"),
                          ranks=world.size("dp_shard"))  # fmt: skip
    common = dict(model=model, optimizer=optimizer, schedule=schedule, train_loader=loader, val_loader=None,
                  device=world.device, precision="float32", grad_accum=1, grad_clip=1.0)  # fmt: skip
    if world.distributed:
        from tnlm.training.parallel.trainer import DistributedTrainer

        return DistributedTrainer(world=world, **common)
    return Trainer(**common)


def worst_over_ranks(world, *values: float) -> list[float]:
    """The largest value over all ranks (every rank gets it)."""
    import torch
    import torch.distributed as dist

    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def worker(args: argparse.Namespace) -> None:
    import torch

    from tnlm.training.config import ParallelSection
    from tnlm.training.parallel import init_world

    torch.set_num_threads(args.threads)
    shape = QUICK_SHAPE if args.quick else SHAPE
    sizes = {"dp_shard": 1, "sp": 1, "tp": 1}
    sizes[STRATEGIES[args.strategy]] = int(os.environ.get("WORLD_SIZE", "1"))
    world = init_world(ParallelSection(**sizes), device_setting="cpu", timeout_s=args.timeout)
    base = current_rss_mib()
    if args.mode == "scaling":
        result = scaling_point(world, args, shape, base)
    else:
        result = longest_sequence(world, args, shape, base)
    if world.is_main:
        Path(args.out).write_text(json.dumps(result))
    world.close()


def scaling_point(world, args, shape: dict, base: float) -> dict:
    trainer = make_trainer(world, shape=shape, batch=args.batch, T=args.seq_len, checkpointing=False)
    best = float("inf")
    for i in range(args.warmup + args.repeats):
        world.barrier()
        start = time.perf_counter()
        trainer.train_step()
        world.barrier()
        if i >= args.warmup:
            best = min(best, time.perf_counter() - start)
    step_s, peak = worst_over_ranks(world, best, rss_mib() - base)
    return {"step_s": step_s, "peak_mib": peak, "tokens_per_s": args.batch * args.seq_len / step_s}


def longest_sequence(world, args, shape: dict, base: float) -> dict:
    """One step at each growing length until a rank's peak passes the budget (sp = all ranks, batch 1)."""
    ranks, fits, T = world.world_size, [], args.start_len
    while True:
        T = -(-T // (64 * ranks)) * 64 * ranks  # whole 64-token blocks on every rank
        trainer = make_trainer(world, shape=shape, batch=1, T=T, checkpointing=args.checkpointing)
        trainer.train_step()
        del trainer
        (peak,) = worst_over_ranks(world, rss_mib() - base)
        fits.append({"T": T, "peak_mib": peak})
        if peak > args.budget_mib or T >= args.max_len:
            break
        T = int(T * args.growth)
    longest = max((f["T"] for f in fits if f["peak_mib"] <= args.budget_mib), default=0)
    return {"longest": longest, "tried": fits}


# ---------------------------------------------------------------------------------------------- driver


def launch(ranks: int, worker_args: list[str], *, timeout: float) -> dict:
    """Run one measurement (torchrun for several ranks) and read what its first rank wrote."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = [str(Path(__file__).resolve()), "--worker", "--out", str(out), *worker_args]
        if ranks == 1:
            command = [sys.executable, *script]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *script]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(key, None)
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SystemExit(f"{' '.join(command)} ran past {timeout:.0f} s") from None
        if done.returncode != 0 or not out.is_file():
            raise SystemExit(f"{' '.join(command)} failed:\n{(done.stdout + done.stderr)[-4000:]}")
        return json.loads(out.read_text())


def common_args(args) -> list[str]:
    flags = ["--threads", str(args.threads), "--timeout", str(args.timeout)]
    return flags + (["--quick"] if args.quick else [])


def run_scaling(args) -> list[dict]:
    rows = []
    for strategy in STRATEGIES:
        for ranks in args.ranks:
            flags = ["--mode", "scaling", "--strategy", strategy, "--batch", str(args.batch), "--seq-len",
                     str(args.seq_len), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]  # fmt: skip
            point = launch(ranks, flags + common_args(args), timeout=args.timeout)
            rows.append({"strategy": strategy, "ranks": ranks, **point})
            print(f"  {strategy:4s} x{ranks}: {point['step_s'] * 1e3:8.1f} ms/step, peak {point['peak_mib']:7.1f} MiB/rank",
                  flush=True)  # fmt: skip
    return rows


def run_longest(args) -> list[dict]:
    rows = []
    for ranks in args.ranks:
        flags = ["--mode", "longest", "--strategy", "sp", "--budget-mib", str(args.budget_mib), "--start-len",
                 str(args.start_len), "--growth", str(args.growth), "--max-len", str(args.max_len)]  # fmt: skip
        flags += ["--checkpointing"] if args.checkpointing else []
        point = launch(ranks, flags + common_args(args), timeout=args.timeout)
        rows.append({"ranks": ranks, **point})
        print(f"  sp x{ranks}: longest {point['longest']} tokens within {args.budget_mib:.0f} MiB/rank", flush=True)
    return rows


def print_tables(scaling: list[dict], longest: list[dict], args) -> None:
    print(f"\nstrong scaling: global batch {args.batch} x {args.seq_len} tokens, float32, {args.threads} thread(s)/rank")
    print(f"{'strategy':8s} {'ranks':>5s} | {'step ms':>9s} {'speedup':>7s} | {'peak MiB/rank':>13s} {'vs 1 rank':>9s}")
    for strategy in STRATEGIES:
        part = [r for r in scaling if r["strategy"] == strategy]
        one = next((r for r in part if r["ranks"] == 1), part[0])
        for r in part:
            print(f"{strategy:8s} {r['ranks']:5d} | {r['step_s'] * 1e3:9.1f} {one['step_s'] / r['step_s']:6.2f}x | "
                  f"{r['peak_mib']:13.1f} {r['peak_mib'] / one['peak_mib']:8.2f}x")  # fmt: skip
    ac = ", activation checkpointing" if args.checkpointing else ""
    print(f"\nsequence parallelism: longest TransNormer sequence within {args.budget_mib:.0f} MiB per rank (batch 1{ac})")
    print(f"{'ranks':>5s} | {'longest T':>9s} {'vs 1 rank':>9s} {'ideal':>6s}")
    first = longest[0]
    for r in longest:
        ratio = r["longest"] / first["longest"] if first["longest"] else float("nan")
        print(f"{r['ranks']:5d} | {r['longest']:9d} {ratio:8.2f}x {r['ranks'] / first['ranks']:5.0f}x")


def plot(scaling: list[dict], longest: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_mem, ax_len) = plt.subplots(1, 3, figsize=(14, 4))
    for strategy, style in zip(STRATEGIES, ("o-", "s--", "^-")):
        part = [r for r in scaling if r["strategy"] == strategy]
        ax_time.plot([r["ranks"] for r in part], [r["step_s"] * 1e3 for r in part], style, label=strategy)
        ax_mem.plot([r["ranks"] for r in part], [r["peak_mib"] for r in part], style, label=strategy)
    ax_len.plot([r["ranks"] for r in longest], [r["longest"] for r in longest], "o-", label="measured")
    ax_len.plot([r["ranks"] for r in longest], [longest[0]["longest"] * r["ranks"] / longest[0]["ranks"] for r in longest],
                ":", label="linear")  # fmt: skip
    for ax, ylabel in ((ax_time, "step time (ms)"), (ax_mem, "peak memory per rank (MiB)"),
                       (ax_len, "longest sequence (tokens)")):  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_xlabel("ranks (CPU processes)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("tnlm distributed training on CPU processes (gloo)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--batch", type=int, default=8, help="global batch (rows) of the scaling table")
    p.add_argument("--seq-len", type=int, default=1024, help="sequence length of the scaling table")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-mib", type=float, default=1024.0, help="per-rank memory budget of the longest-sequence table")
    p.add_argument("--start-len", type=int, default=2048)
    p.add_argument("--growth", type=float, default=1.25, help="factor between the lengths tried")
    p.add_argument("--max-len", type=int, default=1 << 20)
    p.add_argument("--checkpointing", action="store_true", help="activation checkpointing in the longest-sequence runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per launch")
    p.add_argument("--quick", action="store_true", help="a tiny model and sizes: proves the script runs")
    p.add_argument("--out", type=str, default=str(RESULTS / "parallel_scaling"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=("scaling", "longest"), help=argparse.SUPPRESS)
    p.add_argument("--strategy", choices=tuple(STRATEGIES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick and not args.worker:
        args.batch, args.seq_len, args.warmup, args.repeats = 4, 128, 1, 1
        args.budget_mib, args.start_len, args.growth, args.timeout = 64.0, 512, 1.5, 300.0
        if args.out == str(RESULTS / "parallel_scaling"):
            args.out = str(RESULTS / "parallel_scaling_quick")  # never mistaken for the real numbers
    return args


def main() -> None:
    args = parse()
    if args.worker:
        worker(args)
        return
    if any(args.batch % r or args.seq_len % r for r in args.ranks):
        raise SystemExit("--batch and --seq-len must be divisible by every --ranks")
    print(f"{os.cpu_count()} cores; {args.threads} thread(s) per rank; ranks {args.ranks}", flush=True)
    scaling = run_scaling(args)
    longest = run_longest(args)
    print_tables(scaling, longest, args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(), "cores": os.cpu_count(),
            "threads_per_rank": args.threads, "shape": QUICK_SHAPE if args.quick else SHAPE, "batch": args.batch,
            "seq_len": args.seq_len, "budget_mib": args.budget_mib, "checkpointing": args.checkpointing}  # fmt: skip
    out.with_name(out.name + ".json").write_text(json.dumps({"meta": meta, "scaling": scaling, "longest": longest}, indent=1))
    plot(scaling, longest, out.with_name(out.name + ".png"))
    print(f"wrote {out.with_name(out.name + '.json')} and {out.with_name(out.name + '.png')}")


if __name__ == "__main__":
    main()
