"""Checks of the Triton kernels against the references, shared by the interpreter and the GPU tests.

Run as a script (`python -m tests.helpers.triton_checks`) with TRITON_INTERPRET=1 set in its
environment, it checks every case on the CPU and prints one JSON line {case id: {quantity: rel err}}.
Importing this module does not import triton, so the test process never fixes the interpreter flag.
Every case goes through the public `lightning_attn` with the Triton backend chosen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from tests.helpers import rel_err
from tnlm.ops.lightning import lightning_attn, lightning_backend, naive_lightning_attn


@dataclass(frozen=True)
class Case:
    B: int
    T: int
    H: int
    Dk: int
    Dv: int
    dtype: str = "float32"
    lengths: tuple[int, ...] | None = None  # packed sequences (cu_seqlens), B = 1
    state: bool = True  # initial state given and final state used in the loss

    @property
    def id(self) -> str:
        d = f"D{self.Dk}" if self.Dk == self.Dv else f"Dk{self.Dk}-Dv{self.Dv}"
        extra = "" if self.lengths is None else "-L" + "-".join(map(str, self.lengths))
        return f"B{self.B}-T{self.T}-H{self.H}-{d}-{self.dtype}{extra}{'' if self.state else '-nostate'}"


def _case(B, T, H, Dk, Dv=None, **kw) -> Case:
    return Case(B, T, H, Dk, Dk if Dv is None else Dv, **kw)


ATTN_CASES = [
    _case(1, 1, 2, 32),
    _case(2, 63, 2, 32),
    _case(1, 64, 2, 96),
    _case(1, 65, 1, 128),
    _case(2, 150, 2, 64, 32),
    _case(1, 1000, 1, 16),
    _case(1, 100, 2, 32, state=False),
    _case(1, 193, 2, 32, 48, lengths=(1, 63, 64, 65)),
    _case(1, 200, 2, 32, lengths=(70, 0, 130), state=False),
    _case(1, 130, 1, 192, 96),  # LRPE doubles Dk: several feature tiles on both sides (B > 1: the cases above)
    _case(1, 130, 2, 32, dtype="float16"),
    _case(1, 65, 2, 64, 32, dtype="float16"),
]
NORM_CASES = [(1, 32), (7, 96), (33, 1000), (4, 4096)]
TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}


def _inputs(case: Case, device: str):
    g = torch.Generator().manual_seed(case.T * 7 + case.Dk)
    dtype = getattr(torch, case.dtype)
    N = case.B if case.lengths is None else len(case.lengths)
    q, k = (torch.randn(case.B, case.T, case.H, case.Dk, generator=g) for _ in range(2))
    v = torch.randn(case.B, case.T, case.H, case.Dv, generator=g)
    s0 = torch.randn(N, case.H, case.Dk, case.Dv, generator=g)
    lo = [x.to(device=device, dtype=dtype).requires_grad_() for x in (q, k, v)]
    return lo + [s0.to(device).requires_grad_()], -torch.logspace(0, -4, case.H, device=device)


def _fwd_bwd(fn, case: Case, leaves, log_decay, cu):
    q, k, v, s0 = leaves
    o, final = fn(q, k, v, log_decay, initial_state=s0 if case.state else None,
                  output_final_state=True, cu_seqlens=cu)
    g = torch.Generator().manual_seed(1)
    do = torch.randn(o.shape, generator=g).to(o.device)
    loss = (o.float() * do).sum()
    if case.state:
        loss = loss + (final * torch.randn(final.shape, generator=g).to(o.device)).sum()
    wrt = leaves if case.state else leaves[:3]
    return [o, final, *torch.autograd.grad(loss, wrt)]


def naive_packed(q, k, v, log_decay, *, initial_state, output_final_state, cu_seqlens):
    """The O(T^2) reference, one call per packed sequence."""
    if cu_seqlens is None:
        return naive_lightning_attn(q, k, v, log_decay, initial_state=initial_state, output_final_state=True)
    outs = [
        naive_lightning_attn(q[:, a:b], k[:, a:b], v[:, a:b], log_decay, output_final_state=True,
                             initial_state=None if initial_state is None else initial_state[i : i + 1])
        for i, (a, b) in enumerate(zip(cu_seqlens[:-1].tolist(), cu_seqlens[1:].tolist()))
    ]
    return torch.cat([o for o, _ in outs], 1), torch.cat([s for _, s in outs])


def check_attn(case: Case, device: str) -> dict[str, float]:
    """Relative error of the Triton path against the reference, for o, final state and every gradient."""
    leaves, log_decay = _inputs(case, device)
    cu = None
    if case.lengths is not None:
        cu = torch.tensor([0, *case.lengths], device=device).cumsum(0).to(torch.int32)
    with lightning_backend("triton"):
        got = _fwd_bwd(lightning_attn, case, leaves, log_decay, cu)
    ref_leaves = [x.detach().float().cpu().requires_grad_() for x in leaves]
    want = _fwd_bwd(naive_packed, case, ref_leaves, log_decay.cpu(), None if cu is None else cu.cpu())
    names = ["o", "final_state", "dq", "dk", "dv", "d_initial_state"]
    out = {n: rel_err(a.cpu(), b) for n, a, b in zip(names, got, want)}
    out["finite"] = float(all(torch.isfinite(a).all() for a in got))
    return out


def check_norm(rows: int, dim: int, device: str, dtype: str = "float32") -> dict[str, float]:
    from tnlm.ops.norm import srms_norm_reference
    from tnlm.ops.norm_triton import triton_srms_norm

    g = torch.Generator().manual_seed(rows + dim)
    x = torch.randn(rows, dim, generator=g).mul_(3).to(device=device, dtype=getattr(torch, dtype)).requires_grad_()
    dy = torch.randn(rows, dim, generator=g).to(device)
    y = triton_srms_norm(x)
    (dx,) = torch.autograd.grad((y.float() * dy).sum(), x)
    xr = x.detach().float().cpu().requires_grad_()
    yr = srms_norm_reference(xr)
    (dxr,) = torch.autograd.grad((yr * dy.cpu()).sum(), xr)
    return {"y": rel_err(y.cpu(), yr), "dx": rel_err(dx.cpu(), dxr),
            "finite": float(torch.isfinite(y).all() and torch.isfinite(dx).all())}


def check_model(backend: str = "triton") -> dict[str, float]:
    """A two-layer tnl-tiny forward and backward with the custom op forced onto the Triton kernels (the path
    CUDA tensors take) against the same step on chunk.py: the whole integration, not just the kernels."""
    import tnlm

    torch.manual_seed(0)
    ids = torch.randint(3, 8192, (1, 70))  # two chunks of 64; the interpreter runs every program in Python
    shape = {"decoder_layers": 2, "linear_use_lrpe_list": [1, 0]}  # a layer with LRPE and one without
    out = {}
    for name in ("chunk", backend):
        with lightning_backend(name):
            model = tnlm.create_model("tnl-tiny", seed=0, overrides=shape)
            res = model(ids, labels=ids)
            res.loss.backward()
        out[name] = (res.logits.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    (lc, gc), (lt, gt) = out["chunk"], out[backend]
    return {"logits": rel_err(lt, lc), "grads": rel_err(gt, gc),
            "finite": float(torch.isfinite(lt).all() and torch.isfinite(gt).all())}


def _nan_buffers() -> None:
    """Fresh output buffers start as NaN, so an element a kernel forgets to write cannot pass."""
    import tnlm.ops.lightning.triton as lt

    lt._empty = lambda like, *shape, dtype=None: like.new_full(shape, float("nan"), dtype=dtype or like.dtype)


def main() -> None:
    _nan_buffers()
    results = {c.id: check_attn(c, "cpu") for c in ATTN_CASES}
    results.update({f"norm-R{r}-D{d}": check_norm(r, d, "cpu") for r, d in NORM_CASES})
    results["norm-R7-D96-float16"] = check_norm(7, 96, "cpu", "float16")
    results["model-tnl-tiny"] = check_model()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
