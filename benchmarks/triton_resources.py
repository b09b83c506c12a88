"""Registers, spills and shared memory of the Lightning Attention Triton kernels on real GPU targets.

    python benchmarks/triton_resources.py          # sm_80 and sm_90; bf16, fp16, fp32; a few head sizes

Needs no GPU: each kernel is compiled ahead of time, with the configuration the launchers use, for
the target's architecture, and the resource usage is read from the cubin with the cuobjdump that
ships with Triton. A kernel that spills registers to local memory ("stack") runs far slower than
one that does not, so this is how the fixed configurations in ops/lightning/triton/__init__.py were
chosen on machines without a GPU. Writes results/triton_resources.{json,png}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
SHAPES = [(64, 64), (128, 128), (256, 128)]  # (Dk, Dv); LRPE doubles Dk


def main() -> None:
    from tnlm.ops.lightning.triton.resources import kernels, resource_usage

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", type=int, nargs="+", default=[80, 90])
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp16", "fp32"])
    p.add_argument("--out", type=Path, default=RESULTS / "triton_resources")
    args = p.parse_args()
    rows = [resource_usage(name, dt, dk, dv, arch)
            for arch in args.archs for dt in args.dtypes for dk, dv in SHAPES for name in kernels()]
    head = f"{'arch':6} {'dtype':5} {'Dk':>4} {'Dv':>4} | " + " | ".join(f"{n:>19}" for n in kernels())
    lines = [head, f"{'':23}| " + " | ".join(f"{'regs spill smem':>19}" for _ in kernels()), "-" * len(head)]
    for arch in args.archs:
        for dt in args.dtypes:
            for dk, dv in SHAPES:
                cells = [r for r in rows if (r["arch"], r["dtype"], r["Dk"], r["Dv"]) == (f"sm_{arch}", dt, dk, dv)]
                lines.append(f"sm_{arch:<3} {dt:5} {dk:>4} {dv:>4} | " + " | ".join(
                    f"{r['registers']:>4} {r['spill_bytes']:>5} {r['shared_kib']:>5.0f}K" for r in cells))
    text = "\n".join(lines)
    print(text)
    print("bf16 configs (tile, warps):", {n: (r["BK"], r["num_warps"]) for n in kernels() for r in rows
                                          if r["kernel"] == n and r["Dk"] == 128 and r["dtype"] == "bf16"})
    spilled = [r for r in rows if r["spill_bytes"] and r["dtype"] != "fp32"]
    print(f"bf16/fp16 kernels that spill: {len(spilled)} of {sum(r['dtype'] != 'fp32' for r in rows)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"rows": rows, "table": text}, indent=1))
    plot(rows, Path(f"{args.out}.png"))
    print(f"wrote {args.out}.json and {args.out}.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    archs = sorted({r["arch"] for r in rows})
    fig, axes = plt.subplots(1, len(archs), figsize=(7 * len(archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], archs):
        sel = [r for r in rows if r["arch"] == arch]
        labels = [f"{r['kernel']}\n{r['dtype']} {r['Dk']}x{r['Dv']}" for r in sel]
        ax.bar(range(len(sel)), [r["registers"] for r in sel], label="registers / thread")
        ax.bar(range(len(sel)), [r["spill_bytes"] / 4 for r in sel], bottom=[r["registers"] for r in sel],
               label="spilled registers (stack bytes / 4)")
        ax.set_xticks(range(len(sel)), labels, rotation=90, fontsize=5)
        ax.axhline(255, color="k", lw=0.5)
        ax.set(title=f"Lightning Attention Triton kernels, {arch}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
