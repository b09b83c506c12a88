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
import os
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FP32_ARGS = {"S0", "SN", "LOG_DECAY", "DSN", "DS0"}  # states and decays are float32 whatever the inputs
INT_ARGS = {"CU", "FIRST", "BLOCKS"}
SHAPES = [(64, 64), (128, 128), (256, 128)]  # (Dk, Dv); LRPE doubles Dk


def kernels() -> dict:
    """name -> (jit function, launcher config key, extra constexprs), as the launchers call them."""
    from tnlm.ops.lightning.triton import kernels as k

    return {
        "states_fwd": (k.lightning_states_fwd_kernel, "states", {"HAS_S0": True, "STORE_FINAL": True}),
        "output": (k.lightning_output_kernel, "output", {}),
        "states_bwd": (k.lightning_states_bwd_kernel, "states", {"HAS_DSN": True}),
        "bwd_dqk": (k.lightning_bwd_dqk_kernel, "dqk", {}),
        "bwd_dv": (k.lightning_bwd_dv_kernel, "dv", {}),
    }


def resource_usage(name: str, dtype: str, dk: int, dv: int, arch: int = 90) -> dict:
    """Compile one kernel for sm_<arch> with inputs of `dtype` ("bf16", "fp16", "fp32")."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from tnlm.ops.lightning.triton import BLOCK_T, _config

    fn, key, extra = kernels()[name]
    meta = dict(H=8, DK=dk, DV=dv, BT=BLOCK_T, VARLEN=False, PREC="ieee" if dtype == "fp32" else "tf32")
    cfg = _config(key, meta)
    num_warps = cfg.pop("num_warps")
    consts = {**cfg, **extra}
    sig = {}
    for p in fn.params:
        if p.name in consts:
            sig[p.name] = "constexpr"
        elif p.name == "T":
            sig[p.name] = "i32"
        else:
            sig[p.name] = "*fp32" if p.name in FP32_ARGS else "*i32" if p.name in INT_ARGS else f"*{dtype}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                  target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "kernel.cubin")
        Path(path).write_bytes(compiled.asm["cubin"])
        out = subprocess.run([str(tool), "--dump-resource-usage", path], capture_output=True, text=True, check=True).stdout
    regs, stack = (int(x) for x in re.search(r"REG:(\d+) STACK:(\d+)", out).groups())
    return {"kernel": name, "arch": f"sm_{arch}", "dtype": dtype, "Dk": dk, "Dv": dv, "BK": cfg["BK"], "BV": cfg["BV"],
            "num_warps": num_warps, "registers": regs, "spill_bytes": stack, "shared_kib": compiled.metadata.shared / 1024}


def main() -> None:
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
