"""Triton kernels (Lightning Attention and fused SRMSNorm) against the references.

On the CPU they run under the Triton interpreter in a subprocess (TRITON_INTERPRET=1 must be set
before triton is imported, and this test process may already have imported it), float32 and float16,
small shapes. On a GPU they also run natively, bf16 included.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import REPO
from tests.helpers.triton_checks import ATTN_CASES, NORM_CASES, TOLERANCE, check_attn, check_norm

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def interpreted() -> dict[str, dict[str, float]]:
    """Every case, checked once in one interpreter subprocess."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    run = subprocess.run([sys.executable, "-m", "tests.helpers.triton_checks"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def assert_errors(errors: dict[str, float], tol: float) -> None:
    assert errors.pop("finite") == 1.0, "NaN/inf in an output (an element the kernel never wrote?)"
    bad = {k: v for k, v in errors.items() if not v <= tol}
    assert not bad, f"relative errors above {tol:g}: {bad}"


@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: c.id)
def test_interpreted_lightning_kernels_match_naive(interpreted, case):
    assert_errors(dict(interpreted[case.id]), TOLERANCE[case.dtype])


@pytest.mark.parametrize("rows,dim", NORM_CASES, ids=lambda x: str(x))
def test_interpreted_srms_norm_kernels_match_pytorch(interpreted, rows, dim):
    key = f"norm-R{rows}-D{dim}"
    for suffix, dtype in (("", "float32"), ("-float16", "float16")):
        if key + suffix in interpreted:
            assert_errors(dict(interpreted[key + suffix]), TOLERANCE[dtype])


def test_interpreted_kernels_run_a_whole_model_step(interpreted):
    """tnl-tiny forward and backward through the custom op's Triton branch (forced on the CPU)."""
    assert_errors(dict(interpreted["model-tnl-tiny"]), TOLERANCE["float32"])


@CUDA
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", [c for c in ATTN_CASES if c.dtype == "float32"], ids=lambda c: c.id)
def test_gpu_lightning_kernels_match_naive(case, dtype):
    from dataclasses import replace

    assert_errors(check_attn(replace(case, dtype=dtype), "cuda"), TOLERANCE[dtype])


@CUDA
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows,dim", NORM_CASES, ids=lambda x: str(x))
def test_gpu_srms_norm_kernels_match_pytorch(rows, dim, dtype):
    assert_errors(check_norm(rows, dim, "cuda", dtype), TOLERANCE[dtype])


@CUDA
def test_cuda_tensors_dispatch_to_the_kernels(monkeypatch):
    import tnlm.ops.lightning.triton as lt
    from tnlm.ops.lightning import lightning_attn

    calls = []
    real = lt.triton_fwd
    monkeypatch.setattr(lt, "triton_fwd", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    q = torch.randn(1, 70, 2, 32, device="cuda")
    lightning_attn(q, q, q, torch.tensor([-0.5, -0.1], device="cuda"))
    assert calls


def test_kernels_compile_for_a_gpu_without_spilling_registers():
    """Compiled ahead of time for sm_90 (no GPU needed) with the launchers' configurations: a
    kernel that spills registers to local memory would be slow on every GPU run."""
    pytest.importorskip("triton.backends.nvidia")
    code = (
        "import json; from tnlm.ops.lightning.triton.resources import kernels, resource_usage; "
        "print(json.dumps([resource_usage(n, dt, 128, 128) for dt in ('bf16', 'fp32') for n in kernels()]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    rows = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(rows) == 10
    bf16 = {r["kernel"]: r["spill_bytes"] for r in rows if r["dtype"] == "bf16"}
    assert not any(bf16.values()), f"bf16 kernels spill registers (bytes): {bf16}"
    fp32 = {r["kernel"]: r["spill_bytes"] for r in rows if r["dtype"] == "fp32"}
    assert max(fp32.values()) <= 64, f"fp32 kernels spill registers (bytes): {fp32}"
    assert all(r["shared_kib"] <= 227 for r in rows), "a kernel needs more shared memory than an H100 block has"
