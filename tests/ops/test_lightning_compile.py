"""The custom op `torch.ops.tnlm.lightning_attn`: registration checks, and torch.compile without breaks."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import rel_err
from tnlm.ops.lightning import lightning_attn, naive_lightning_attn
from tnlm.ops.lightning.custom_op import lightning_attn_op


def _args(state: bool, packed: bool):
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 70, 2, 16, generator=g).requires_grad_() for _ in range(2))
    v = torch.randn(1, 70, 2, 8, generator=g).requires_grad_()
    cu = torch.tensor([0, 30, 70]) if packed else None
    s0 = torch.randn(2 if packed else 1, 2, 16, 8, generator=g).requires_grad_() if state else None
    return q, k, v, torch.tensor([-0.5, -0.1]), s0, cu


@pytest.mark.parametrize("state,packed", [(False, False), (True, False), (True, True)], ids=str)
def test_opcheck(state, packed):
    """Schema, fake (meta) implementation, autograd registration, AOT dispatch."""
    result = torch.library.opcheck(lightning_attn_op, _args(state, packed))
    assert all(v == "SUCCESS" for v in result.values()), result


def test_compiled_attention_fullgraph_matches_naive():
    q, k, v, log_decay, s0, _ = _args(True, False)

    def f(q, k, v, s0):
        o, s = lightning_attn(q, k, v, log_decay, initial_state=s0, output_final_state=True)
        return o.sum() + s.sum()

    got = torch.compile(f, fullgraph=True, backend="aot_eager")(q, k, v, s0)
    ref_o, ref_s = naive_lightning_attn(q, k, v, log_decay, initial_state=s0, output_final_state=True)
    want = ref_o.sum() + ref_s.sum()
    assert rel_err(got, want) <= 1e-5
    g_got = torch.autograd.grad(got, (q, k, v, s0))
    g_want = torch.autograd.grad(want, (q, k, v, s0))
    for a, b in zip(g_got, g_want):
        assert rel_err(a, b) <= 1e-5


@pytest.mark.parametrize("layer", [0, 1], ids=["lrpe-layer0", "layer1"])
def test_compiled_tnl_tiny_block_fullgraph(layer):
    """A TransNormer block of tnl-tiny under torch.compile(fullgraph=True): no graph break (fullgraph
    raises on one), same output and parameter gradients as eager."""
    from tnlm.models.decoder import LayerInputs
    from tnlm.models.registry import create_model

    model = create_model("tnl-tiny", seed=0)
    block = model.model.layers[layer]
    B, T, d = 2, 100, model.config.decoder_embed_dim
    x = torch.randn(B, T, d, generator=torch.Generator().manual_seed(1))
    positions = torch.arange(T).expand(B, T)
    inputs = LayerInputs(positions=positions, attention_mask=None, cu_seqlens=None, output_state=False)

    def run(fn):
        block.zero_grad()
        out, _ = fn(x, inputs, None)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in block.parameters() if p.grad is not None]

    want, want_grads = run(block)
    torch._dynamo.reset()
    got, got_grads = run(torch.compile(block, fullgraph=True, backend="aot_eager"))
    assert rel_err(got, want) <= 1e-5
    assert len(got_grads) == len(want_grads) > 0
    for a, b in zip(got_grads, want_grads):
        assert rel_err(a, b) <= 1e-5
