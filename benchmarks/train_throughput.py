"""Training throughput: TransNormer vs the Transformer of the same size, side by side.

    python benchmarks/train_throughput.py                  # CPU: float32; GPU: float32 and bf16
    python benchmarks/train_throughput.py --quick          # a few seconds: proves the script runs

Both models: d=512, 4 layers, 8 heads of 64, FFN 1536 (TransNormer's SGLU, the Transformer's SwiGLU),
vocabulary 8192 with tied embeddings, about 19M and 18M parameters. Every sequence length from 512 to
16384 trains the same number of tokens per step (16384: batch 32 x 512 ... batch 1 x 16384), so a
length's tokens/s compares directly with another's. A step is the trainer's own: forward, float32
cross-entropy, backward, gradient clipping, AdamW. The two models alternate step by step at each
length (so a slow spell of the machine hits both), and each reports its fastest of --repeats steps
after --warmup. MFU divides model FLOPs per token (tnlm.training.flops: 6 x linear weights + attention)
by the float32 matrix-product rate measured at start on a CPU, or the device's data-sheet peak.

Prints a table, writes results/train_throughput.{json,png}, and checks the targets of the training issue
(CPU): TransNormer at least as fast as the Transformer at 2048, 2.5x at 8192 and 4x at 16384; its own
tokens/s at 16384 at least 0.85x its tokens/s at 512; its MFU at least 50% at every length.
"""

from __future__ import annotations

import argparse
import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from tnlm.models import create_model
from tnlm.training.flops import flops_per_token, peak_flops
from tnlm.training.throughput import throughput_trainer, time_train_step
from tnlm.training.trainer import Trainer

RESULTS = Path(__file__).parent / "results"
SHAPES = {
    "transnormer": ("tnl-tiny", dict(decoder_embed_dim=512, hidden_dim=512, decoder_layers=4, decoder_attention_heads=8,
                                     glu_dim=1536, linear_use_lrpe_list=[1, 0, 0, 0], vocab_size=8192)),
    "transformer": ("transformer-tiny", dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8,
                                             intermediate_size=1536, vocab_size=8192, max_position_embeddings=16384)),
}  # fmt: skip
LENGTHS = (512, 1024, 2048, 4096, 8192, 16384)


@dataclass
class Row:
    device: str
    precision: str
    model: str
    T: int
    batch: int
    tokens_per_s: float
    step_ms: float
    mfu: float
    params_m: float


def make_trainer(family: str, *, T: int, tokens: int, device: torch.device, precision: str) -> Trainer:
    preset, overrides = SHAPES[family]
    model = create_model(preset, overrides=overrides, seed=0)
    return throughput_trainer(model, batch=tokens // T, seq_len=T, device=device, precision=precision)


def measure_length(T: int, *, tokens: int, device: torch.device, precision: str, warmup: int, repeats: int,
                   peak: float) -> list[Row]:  # fmt: skip
    trainers = {f: make_trainer(f, T=T, tokens=tokens, device=device, precision=precision) for f in SHAPES}
    best = {f: float("inf") for f in SHAPES}
    for i in range(warmup + repeats):
        for family, trainer in trainers.items():  # alternate: a slow spell of the machine hits both
            seconds = time_train_step(trainer)
            if i >= warmup:
                best[family] = min(best[family], seconds)
    rows = []
    for family, trainer in trainers.items():
        rate = tokens / best[family]
        flops = flops_per_token(trainer.model, seq_len=T)
        params = sum(p.numel() for p in trainer.model.parameters()) / 1e6
        rows.append(Row(device.type, precision, family, T, tokens // T, rate, best[family] * 1e3, rate * flops / peak, params))
    return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'precision':9s} {'T':>6s} {'batch':>5s} | {'TNL tok/s':>10s} {'TF tok/s':>10s} {'TNL/TF':>7s} | "
          f"{'TNL MFU':>7s} {'TF MFU':>7s} | {'TNL vs first':>12s}")  # fmt: skip
    for precision in sorted({r.precision for r in rows}):
        part = [r for r in rows if r.precision == precision]
        base = next(r.tokens_per_s for r in part if r.model == "transnormer" and r.T == min(x.T for x in part))
        for T in sorted({r.T for r in part}):
            tnl = next(r for r in part if r.T == T and r.model == "transnormer")
            tf = next(r for r in part if r.T == T and r.model == "transformer")
            print(f"{precision:9s} {T:6d} {tnl.batch:5d} | {tnl.tokens_per_s:10.0f} {tf.tokens_per_s:10.0f} "
                  f"{tnl.tokens_per_s / tf.tokens_per_s:6.2f}x | {tnl.mfu:7.1%} {tf.mfu:7.1%} | "
                  f"{tnl.tokens_per_s / base:11.2f}x")  # fmt: skip


def check_targets(rows: list[Row]) -> dict[str, bool]:
    """The training issue's CPU targets, on the float32 rows."""
    part = [r for r in rows if r.precision == "float32"]
    rate = {(r.model, r.T): r.tokens_per_s for r in part}
    out = {}
    for T, factor in ((2048, 1.0), (8192, 2.5), (16384, 4.0)):
        if ("transnormer", T) in rate:
            out[f"TNL >= {factor}x TF at {T}"] = rate["transnormer", T] >= factor * rate["transformer", T]
    lengths = sorted(T for m, T in rate if m == "transnormer")
    if lengths:
        out[f"TNL tok/s at {lengths[-1]} >= 0.85x at {lengths[0]}"] = (
            rate["transnormer", lengths[-1]] >= 0.85 * rate["transnormer", lengths[0]]
        )
    out["TNL MFU >= 50% at every length"] = all(r.mfu >= 0.5 for r in part if r.model == "transnormer")
    return out


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_mfu) = plt.subplots(1, 2, figsize=(11, 4))
    for (model, precision), style in zip(sorted({(r.model, r.precision) for r in rows}), ("o-", "s--", "^-", "v--")):
        part = sorted((r for r in rows if r.model == model and r.precision == precision), key=lambda r: r.T)
        label = f"{model} ({precision})"
        ax_rate.plot([r.T for r in part], [r.tokens_per_s for r in part], style, label=label)
        ax_mfu.plot([r.T for r in part], [100 * r.mfu for r in part], style, label=label)
    for ax, ylabel in ((ax_rate, "training tokens/s"), (ax_mfu, "MFU (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (same tokens per step)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Training step, ~20M parameters, {rows[0].device}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--tokens", type=int, default=16384, help="tokens per step at every length")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="lengths 256 and 512, 1024 tokens, one repeat")
    parser.add_argument("--out", type=Path, default=RESULTS / "train_throughput")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.tokens, args.warmup, args.repeats = [256, 512], 1024, 1, 1
    if any(args.tokens % T for T in args.lengths):
        parser.error("--tokens must be a multiple of every length")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precisions = ["float32", "bf16"] if device.type == "cuda" else ["float32"]
    rows: list[Row] = []
    peaks = {}
    for precision in precisions:
        peak, source = peak_flops(device, dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
        peaks[precision] = {"flops": peak, "source": source}
        print(f"{precision}: MFU against {peak / 1e9:.1f} GFLOP/s ({source}); {torch.get_num_threads()} threads")
        for T in args.lengths:
            rows += measure_length(T, tokens=args.tokens, device=device, precision=precision, warmup=args.warmup,
                                   repeats=args.repeats, peak=peak)  # fmt: skip
    print_table(rows)
    targets = check_targets(rows) if device.type == "cpu" else {}
    for name, ok in targets.items():
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.machine(), "processor": platform.processor(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "tokens_per_step": args.tokens, "peaks": peaks}  # fmt: skip
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows], "targets": targets}, indent=1)
    )
    plot(rows, args.out.with_suffix(".png"))
    print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
