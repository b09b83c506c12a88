"""The TransNormerLLM paper's ablation fields compute what they say, and decode as they train."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tnlm.layers.mlp import SGLU
from tnlm.layers.norm import RMSNorm, build_norm
from tnlm.models import create_model

TINY = {"decoder_embed_dim": 32, "hidden_dim": 32, "decoder_attention_heads": 2, "glu_dim": 48, "decoder_layers": 2,
        "vocab_size": 97, "linear_use_lrpe_list": [1, 0]}  # fmt: skip


def test_without_decay_every_head_has_lambda_one_and_the_released_model_does_not():
    plain = create_model("tnl-tiny", overrides={**TINY, "use_decay": False}, seed=0)
    released = create_model("tnl-tiny", overrides=TINY, seed=0)
    for a, b in zip(plain.model.layers, released.model.layers):
        assert torch.equal(a.token_mixer.log_decay(torch.device("cpu")), torch.zeros(2))
        assert (b.token_mixer.log_decay(torch.device("cpu")) < 0).all()


def test_without_decay_the_outputs_change_and_step_by_step_decoding_equals_the_full_pass():
    torch.manual_seed(0)
    plain = create_model("tnl-tiny", overrides={**TINY, "use_decay": False}, seed=0).eval()
    released = create_model("tnl-tiny", overrides=TINY, seed=0).eval()
    released.load_state_dict(plain.state_dict())
    ids = torch.randint(3, 97, (1, 13))
    with torch.no_grad():
        full = plain(ids).logits
        assert not torch.allclose(full, released(ids).logits, atol=1e-4)
        out = plain(ids[:, :7], use_cache=True)
        steps = [out.logits]
        for t in range(7, 13):
            out = plain(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-4)


def test_glu_with_an_activation_is_the_gated_unit_sglu_simplified():
    torch.manual_seed(1)
    glu = SGLU(6, 10, act="silu")
    x = torch.randn(3, 5, 6)
    expected = glu.l3(F.silu(glu.l1(x)) * glu.l2(x))
    assert torch.allclose(glu(x), expected, atol=1e-6)
    sglu = SGLU(6, 10)
    sglu.load_state_dict(glu.state_dict())
    assert torch.allclose(sglu(x), glu.l3(glu.l1(x) * glu.l2(x)), atol=1e-6)


def test_rmsnorm_has_a_weight_and_normalises_by_the_root_mean_square():
    norm = build_norm("rmsnorm", 7)
    assert isinstance(norm, RMSNorm)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 7))
    x = torch.randn(4, 7) * 3
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    assert torch.allclose(norm(x), expected, atol=1e-5)
