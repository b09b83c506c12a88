"""Model FLOPs per trained token and the peak rate MFU is measured against.

FLOPs per token of a training step (forward + backward = 3 x forward):
  6 x (weights of every linear layer, the LM head included; embedding lookups are free)
  + per attention layer, with q width W = heads x head_dim:
      softmax, causal over T tokens:     6 W (T + 1)         (QK^T and AV, each 2 W per key, T/2 keys)
      decayed linear (TransNormer):      12 W head_dim       (state update k^T v and read-out q S)
      Infini-attention (segments of S):  6 W (min(T, S) + 1) + 12 W head_dim   (local softmax + memory)
The linear-attention count is the recurrent form's work, what the computation needs; the block
algorithm's extra intra-block products are overhead, not model FLOPs.

The peak: on a GPU, the device's dense bf16 (or float32) rate from its data sheet when known; on a CPU,
a float32 matrix product measured at the start of the first run in the process, the rate these cores
really reach (kept for the process's later runs, so that the models of one comparison share it).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from tnlm.layers.infini_attention import InfiniAttention
from tnlm.layers.linear_attention import NormLinearAttention
from tnlm.layers.softmax_attention import SoftmaxAttention

# dense tensor-core TFLOP/s (bf16, float32) from the data sheets, by a substring of the device name
GPU_PEAKS = {
    "H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5), "L40S": (362.0, 91.6),
    "A10G": (70.0, 31.2), "L4": (121.0, 30.3), "4090": (165.0, 82.6), "3090": (71.0, 35.6),
}  # fmt: skip


def flops_per_token(model: nn.Module, *, seq_len: int) -> float:
    """Training FLOPs per token of `model` at sequence length `seq_len` (see the module docstring)."""
    seen: set[int] = set()  # a tied head shares the embedding's weight: its product still counts, once
    linear = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            linear += module.weight.numel()
    return 6.0 * linear + sum(_attention_flops(m, seq_len) for m in model.modules())


def _attention_flops(module: nn.Module, seq_len: int) -> float:
    if isinstance(module, InfiniAttention):
        width = module.num_heads * module.head_dim
        return 6.0 * width * (min(seq_len, module.segment_length) + 1) + 12.0 * width * module.head_dim
    if isinstance(module, SoftmaxAttention):
        return 6.0 * module.num_heads * module.head_dim * (seq_len + 1)
    if isinstance(module, NormLinearAttention):
        return 12.0 * module.num_heads * module.head_dim * module.head_dim
    return 0.0


def peak_flops(device: torch.device, *, dtype: torch.dtype) -> tuple[float, str]:
    """(FLOP/s, how it was found) that MFU divides by."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (bf16, fp32) in GPU_PEAKS.items():
            if key in name:
                return (bf16 if dtype == torch.bfloat16 else fp32) * 1e12, f"{name} data sheet"
    key = (str(device), dtype)
    if key not in _MEASURED:
        _MEASURED[key] = measure_matmul_rate(device, dtype=dtype)
    return _MEASURED[key], f"measured {str(dtype).removeprefix('torch.')} matmul on {device.type}"


_MEASURED: dict[tuple[str, torch.dtype], float] = {}  # (device, dtype) -> FLOP/s, once per process


def measure_matmul_rate(device: torch.device, *, dtype: torch.dtype = torch.float32, n: int = 1024,
                        seconds: float = 0.3) -> float:
    """FLOP/s of an n x n matrix product, the best of a few timed rounds of about `seconds` in all.
    Its own generator: drawing from the global one would shift a resumed run's dropout masks."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    best, rounds, deadline = 0.0, 0, time.perf_counter() + seconds
    while rounds < 3 or time.perf_counter() < deadline:
        _sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = max(best, 2.0 * n**3 / (time.perf_counter() - start))
        rounds += 1
        if rounds > 1000:
            break
    return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
