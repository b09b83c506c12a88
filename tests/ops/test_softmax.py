"""Softmax attention (SDPA, GQA, ALiBi) and RoPE against their slow references."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import rel_err
from tnlm.layers.decay import alibi_slopes
from tnlm.ops.rotary import apply_rotary, apply_rotary_reference, rope_cos_sin, rope_inv_freq
from tnlm.ops.softmax import softmax_attention, softmax_attention_reference


def _inputs(B: int, Tq: int, Tk: int, H: int, Hkv: int, D: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(B * 1000 + Tq * 10 + H)
    shapes = [(B, Tq, H, D), (B, Tk, Hkv, D), (B, Tk, Hkv, D)]
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


def _check_fwd_bwd(fast_args: dict, ref_args: dict, tensors: list[torch.Tensor]) -> None:
    out = softmax_attention(*tensors, **fast_args)
    grads = torch.autograd.grad(out, tensors, grad_outputs=torch.ones_like(out) * 0.1 + out.detach())
    ref = softmax_attention_reference(*tensors, **ref_args)
    ref_grads = torch.autograd.grad(ref, tensors, grad_outputs=torch.ones_like(ref) * 0.1 + out.detach())
    assert torch.isfinite(out).all()
    assert rel_err(out, ref) < 1e-5
    for g, rg in zip(grads, ref_grads):
        assert rel_err(g, rg) < 1e-5


@pytest.mark.parametrize(
    "B,Tq,Tk,H,Hkv,D",
    [(2, 37, 37, 4, 4, 24), (2, 37, 37, 6, 2, 20), (1, 29, 29, 5, 1, 12), (2, 5, 41, 4, 2, 16), (3, 1, 17, 4, 1, 8)],
    ids=["MHA-T37", "GQA-T37", "MQA-T29", "GQA-cache-T5of41", "MQA-decode"],
)
def test_mha_gqa_mqa_equal_repeated_kv_reference(B: int, Tq: int, Tk: int, H: int, Hkv: int, D: int) -> None:
    _check_fwd_bwd({}, {}, _inputs(B, Tq, Tk, H, Hkv, D))


@pytest.mark.parametrize("Tq,Tk,H,Hkv", [(33, 33, 4, 2), (7, 30, 6, 3), (1, 19, 5, 5)], ids=["T33", "cache", "decode-H5"])
def test_alibi_equals_explicit_bias(Tq: int, Tk: int, H: int, Hkv: int) -> None:
    slopes = alibi_slopes(H).float()
    _check_fwd_bwd({"alibi_slopes": slopes}, {"alibi_slopes": slopes}, _inputs(2, Tq, Tk, H, Hkv, 12))


def test_padding_mask_and_fully_masked_rows() -> None:
    q, k, v = _inputs(2, 23, 23, 4, 2, 8)
    mask = torch.ones(2, 23, 23, dtype=torch.bool)
    mask[0, :, :6] = False  # six pads on the left of sequence 0
    _check_fwd_bwd({"mask": mask}, {"mask": mask}, [q, k, v])
    out = softmax_attention(q, k, v, mask=mask, alibi_slopes=alibi_slopes(4).float())
    assert torch.isfinite(out).all()


def test_causality() -> None:
    q, k, v = (t.detach() for t in _inputs(1, 31, 31, 4, 2, 8))
    out = softmax_attention(q, k, v)
    k2, v2 = k.clone(), v.clone()
    k2[:, 20:] += 5.0
    v2[:, 20:] -= 3.0
    out2 = softmax_attention(q, k2, v2)
    assert torch.equal(out[:, :20], out2[:, :20])
    assert not torch.allclose(out[:, 20:], out2[:, 20:])


def test_bad_head_grouping_raises() -> None:
    with pytest.raises(ValueError, match="multiple of Hkv"):
        softmax_attention(torch.randn(1, 4, 6, 8), torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8))


@pytest.mark.parametrize("rope_type,factor", [("default", 1.0), ("linear", 4.0), ("ntk", 4.0), ("llama3", 8.0)])
def test_rotary_equals_complex_reference(rope_type: str, factor: float) -> None:
    inv = rope_inv_freq(22, theta=500.0, rope_type=rope_type, factor=factor, original_max_len=64)
    positions = torch.randint(0, 5000, (2, 13))
    cos, sin = rope_cos_sin(positions, inv)
    x = torch.randn(2, 13, 3, 22, requires_grad=True)
    out, ref = apply_rotary(x, cos, sin), apply_rotary_reference(x, cos, sin)
    assert rel_err(out, ref) < 1e-6
    (g,) = torch.autograd.grad(out, x, out.detach())
    (rg,) = torch.autograd.grad(ref, x, out.detach())
    assert rel_err(g, rg) < 1e-6
    assert torch.allclose(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5)  # a rotation keeps norms


def test_rope_scaling_changes_frequencies() -> None:
    base = rope_inv_freq(16, theta=10000.0)
    assert torch.allclose(rope_inv_freq(16, theta=10000.0, rope_type="linear", factor=2.0), base / 2)
    ntk = rope_inv_freq(16, theta=10000.0, rope_type="ntk", factor=2.0)
    assert ntk[0] == base[0] and (ntk[1:] < base[1:]).all()  # highest frequency kept, others slowed
    with pytest.raises(ValueError, match="rope_type"):
        rope_inv_freq(16, rope_type="yarn")
