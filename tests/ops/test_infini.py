"""Infini-attention memory ops and the segmented attention against their loop references."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import rel_err
from tnlm.ops.infini import (
    elu_feature,
    empty_memory,
    infini_attention,
    infini_attention_reference,
    memory_retrieve,
    memory_retrieve_reference,
    memory_update,
    memory_update_reference,
    pick_memory,
)


def _memory(B: int, H: int, Dk: int, Dv: int) -> tuple[torch.Tensor, torch.Tensor]:
    sk = elu_feature(torch.randn(B, 9, H, Dk))
    return torch.einsum("btkd,btke->bkde", sk, torch.randn(B, 9, H, Dv)), sk.sum(1)


@pytest.mark.parametrize("rule", ["linear", "delta"])
def test_memory_update_and_retrieve_match_loops(rule: str) -> None:
    torch.manual_seed(0)
    B, T, H, Hkv, Dk, Dv = 2, 11, 6, 3, 7, 5
    memory = _memory(B, Hkv, Dk, Dv)
    sk = elu_feature(torch.randn(B, T, Hkv, Dk)).requires_grad_()
    v = torch.randn(B, T, Hkv, Dv, requires_grad=True)
    new, ref = memory_update(sk, v, memory, rule=rule), memory_update_reference(sk, v, memory, rule=rule)
    assert rel_err(new[0], ref[0]) < 1e-6 and rel_err(new[1], ref[1]) < 1e-6
    grads = torch.autograd.grad(new[0].sum() + new[0].pow(2).sum(), [sk, v])
    ref_grads = torch.autograd.grad(ref[0].sum() + ref[0].pow(2).sum(), [sk, v])
    for g, rg in zip(grads, ref_grads):
        assert rel_err(g, rg) < 1e-6
    sq = elu_feature(torch.randn(B, T, H, Dk))
    assert rel_err(memory_retrieve(sq, new), memory_retrieve_reference(sq, ref)) < 1e-6


def test_empty_memory_reads_zero() -> None:
    out = memory_retrieve(elu_feature(torch.randn(1, 3, 2, 4)), empty_memory(1, 2, 4, 4))
    assert torch.equal(out, torch.zeros_like(out))


def _qkv(B: int, T: int, H: int, Hkv: int, D: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(T)
    shapes = [(B, T, H, D), (B, T, Hkv, D), (B, T, Hkv, D), (B, T, H, D), (B, T, Hkv, D)]
    return [torch.randn(*s, generator=g).requires_grad_() for s in shapes]


@pytest.mark.parametrize("rule", ["linear", "delta"])
@pytest.mark.parametrize("B,T,S,H,Hkv,D", [(2, 29, 8, 4, 2, 6), (1, 31, 23, 3, 3, 10), (2, 17, 5, 2, 1, 4)],
                         ids=["B2-T29-S8-GQA", "B1-T31-S23-MHA", "B2-T17-S5-MQA"])  # fmt: skip
def test_segmented_attention_matches_reference(rule: str, B: int, T: int, S: int, H: int, Hkv: int, D: int) -> None:
    q, k, v, q_rot, k_rot = tensors = _qkv(B, T, H, Hkv, D)
    gate = torch.randn(H, requires_grad=True)
    seg = (torch.arange(T) // S).expand(B, T)
    out, mems = infini_attention(
        q, k, v, q_rot=q_rot, k_rot=k_rot, q_seg=seg, k_seg=seg, gate=gate,
        memory=empty_memory(B, Hkv, D, D), count=T // S, rule=rule,
    )  # fmt: skip
    ref, ref_mem = infini_attention_reference(q, k, v, q_rot=q_rot, k_rot=k_rot, segment_length=S, gate=gate, rule=rule)
    assert rel_err(out, ref) < 1e-5
    assert rel_err(mems[-1][0], ref_mem[0]) < 1e-5
    w = torch.randn_like(out)
    grads = torch.autograd.grad((out * w).sum(), [*tensors, gate])
    ref_grads = torch.autograd.grad((ref * w).sum(), [*tensors, gate])
    for g, rg in zip(grads, ref_grads):
        assert rel_err(g, rg) < 1e-5


def test_pick_memory_takes_each_sequences_own_index() -> None:
    mems = [(torch.full((2, 1, 1, 1), float(r)), torch.full((2, 1, 1), float(r))) for r in range(3)]
    M, z = pick_memory(mems, torch.tensor([2, 0]))
    assert M.flatten().tolist() == [2.0, 0.0] and z.flatten().tolist() == [2.0, 0.0]
