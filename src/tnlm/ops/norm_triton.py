"""Fused SRMSNorm forward and backward Triton kernels (one program per row), used for CUDA tensors.

    y = x * r,   r = 1 / sqrt(mean(x^2) + eps)
    dx = r * dy - x * r^3 * mean(dy * x)

Statistics in float32; y and dx in x's dtype. One read of x in the forward, one read of x and dy in
the backward (PyTorch's version makes several passes and float32 temporaries).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from tnlm.errors import InputError

MAX_FUSED_DIM = 65536  # one row must fit one program


@triton.jit
def srms_norm_fwd_kernel(X, Y, RSTD, D, eps, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    mask = cols < D
    x = tl.load(X + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / D + eps)
    tl.store(Y + row * D + cols, (x * rstd).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def srms_norm_bwd_kernel(X, DY, DX, RSTD, D, BD: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BD)
    mask = cols < D
    x = tl.load(X + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(DY + row * D + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(RSTD + row)
    mean_dyx = tl.sum(dy * x, axis=0) / D
    dx = rstd * dy - x * (rstd * rstd * rstd * mean_dyx)
    tl.store(DX + row * D + cols, dx.to(DX.dtype.element_ty), mask=mask)


def _empty(like: torch.Tensor, *shape: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    return like.new_empty(shape, dtype=dtype or like.dtype)


def srms_norm_fwd(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., D) -> y like x, rstd (rows,) float32."""
    x2 = x.reshape(-1, x.shape[-1]).contiguous()
    R, D = x2.shape
    y, rstd = _empty(x2, R, D), _empty(x2, R, dtype=torch.float32)
    if R:
        srms_norm_fwd_kernel[(R,)](x2, y, rstd, D, eps, BD=triton.next_power_of_2(D))
    return y.view(x.shape), rstd


def srms_norm_bwd(x: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    x2, dy2 = x.reshape(-1, x.shape[-1]).contiguous(), dy.reshape(-1, x.shape[-1]).contiguous()
    R, D = x2.shape
    dx = _empty(x2, R, D)
    if R:
        srms_norm_bwd_kernel[(R,)](x2, dy2, dx, rstd, D, BD=triton.next_power_of_2(D))
    return dx.view(x.shape)


@torch.library.custom_op("tnlm::srms_norm_fused", mutates_args=())
def srms_norm_fused_op(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rstd): an opaque op, so torch.compile keeps the fused kernels instead of tracing into them."""
    return srms_norm_fwd(x, eps)


@srms_norm_fused_op.register_fake
def _(x, eps):
    return torch.empty_like(x), x.new_empty(x.numel() // max(x.shape[-1], 1), dtype=torch.float32)


@torch.library.custom_op("tnlm::srms_norm_fused_bwd", mutates_args=())
def srms_norm_fused_bwd_op(x: torch.Tensor, rstd: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    return srms_norm_bwd(x, rstd, dy)


@srms_norm_fused_bwd_op.register_fake
def _(x, rstd, dy):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0], output[1])


def _backward(ctx, dy, _drstd):
    x, rstd = ctx.saved_tensors
    return srms_norm_fused_bwd_op(x, rstd, dy), None


srms_norm_fused_op.register_autograd(_backward, setup_context=_setup_context)


def triton_srms_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """SRMSNorm with the fused kernels; any device Triton can run on (a GPU, or the interpreter)."""
    if x.shape[-1] > MAX_FUSED_DIM:
        raise InputError(f"fused SRMSNorm handles rows up to {MAX_FUSED_DIM} wide; got {x.shape[-1]}")
    return srms_norm_fused_op(x, eps)[0]
