"""What each Lightning Attention Triton kernel costs on a GPU target: registers, spills, shared memory.

Needs no GPU: a kernel is compiled ahead of time, with the configuration its launcher uses (see
__init__.py), for the target's architecture, and the usage is read from the cubin with the cuobjdump
that ships with Triton. A kernel that spills registers to local memory runs far slower than one that
does not; this is how the fixed configurations were chosen, and a test keeps them spill-free.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import warnings
from pathlib import Path

FP32_ARGS = {"S0", "SN", "LOG_DECAY", "DSN", "DS0"}  # states and decays are float32 whatever the inputs
INT_ARGS = {"CU", "FIRST", "BLOCKS"}


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
