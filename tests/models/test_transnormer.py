"""The TransNormerLLM model against the spec: shapes, parameter counts, forward maths, padding, causality."""

import math

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import rel_err
from tnlm.errors import ConfigError
from tnlm.layers.decay import alibi_slopes
from tnlm.layers.norm import build_norm
from tnlm.models.registry import create_model, meta_model
from tnlm.models.transnormer import TransnormerConfig, TransnormerForCausalLM


@pytest.mark.parametrize("name,billions", [("tnl-385m", 0.399), ("tnl-1b", 1.020), ("tnl-7b", 6.837)])
def test_released_parameter_counts(name, billions):
    model = meta_model(name)
    assert all(p.is_meta for p in model.parameters())
    n = sum(p.numel() for p in model.parameters())  # tied head counted once
    assert abs(n / 1e9 - billions) / billions < 0.005


def _spec_state_dict_shapes(V, d, hidden, glu, layers, heads):
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (V, d), "lm_head.weight": (V, d)}
    for n in range(layers):
        p = f"model.layers.{n}."
        shapes[p + "token_mixer.qkvu_proj.weight"] = (4 * hidden, d)
        shapes[p + "token_mixer.out_proj.weight"] = (d, hidden)
        shapes[p + "channel_mixer.l1.weight"] = (glu, d)
        shapes[p + "channel_mixer.l2.weight"] = (glu, d)
        shapes[p + "channel_mixer.l3.weight"] = (d, glu)
    shapes["model.layers.0.token_mixer.lrpe.theta"] = (heads, 1, hd)
    return shapes


def test_state_dict_matches_spec_385m():
    model = meta_model("tnl-385m")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _spec_state_dict_shapes(64000, 1024, 1024, 2816, 24, 8)
    assert model.lm_head.weight is model.model.embed_tokens.weight


def _tiny_config(**kw):
    base = dict(vocab_size=97, decoder_embed_dim=32, hidden_dim=32, decoder_layers=3, decoder_attention_heads=4,
                glu_dim=48, linear_use_lrpe_list=[1, 0, 0])  # fmt: skip
    return TransnormerConfig(**{**base, **kw})


def _reference_forward(model: TransnormerForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The spec's forward pass, written out token by token from the state dict (no tnlm layers)."""
    cfg, sd = model.config, model.state_dict()
    d, H, L = cfg.decoder_embed_dim, cfg.decoder_attention_heads, cfg.decoder_layers
    hd = cfg.hidden_dim // H

    def srms(x):
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + 1e-6)

    T = ids.shape[1]
    x = sd["model.embed_tokens.weight"][ids[0]] * math.sqrt(d)  # (T, d)
    for layer in range(L):
        p = f"model.layers.{layer}."
        h = srms(x)
        q, k, v, u = (h @ sd[p + "token_mixer.qkvu_proj.weight"].T).chunk(4, -1)
        q, k = F.silu(q), F.silu(k)
        lam = torch.exp(-alibi_slopes(H).float() * (1 - layer / (L - 1) + 1e-5))
        o = torch.zeros(T, cfg.hidden_dim)
        for head in range(H):
            sl = slice(head * hd, (head + 1) * hd)
            qh, kh, vh = q[:, sl], k[:, sl], v[:, sl]
            if cfg.use_lrpe(layer):
                theta = sd[p + "token_mixer.lrpe.theta"][head, 0]
                ang = torch.arange(T).float()[:, None] * theta
                qh = torch.cat([qh * torch.cos(ang), qh * torch.sin(ang)], -1)
                kh = torch.cat([kh * torch.cos(ang), kh * torch.sin(ang)], -1)
            for t in range(T):
                w = lam[head] ** (t - torch.arange(t + 1)).float()
                o[t, sl] = ((qh[t] @ kh[: t + 1].T) * w) @ vh[: t + 1]
        x = x + (u * srms(o)) @ sd[p + "token_mixer.out_proj.weight"].T
        h = srms(x)
        g = (h @ sd[p + "channel_mixer.l1.weight"].T) * (h @ sd[p + "channel_mixer.l2.weight"].T)
        x = x + g @ sd[p + "channel_mixer.l3.weight"].T
    return srms(x) @ sd["lm_head.weight"].T


def test_forward_matches_spec_reference():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    ids = torch.randint(1, 97, (1, 21))
    with torch.no_grad():
        got = model(ids, use_cache=False).logits[0]
    assert rel_err(got, _reference_forward(model, ids)) < 1e-5


def test_init_scheme():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config(vocab_size=4000, glu_dim=640))
    emb = model.model.embed_tokens.weight
    assert emb[0].abs().max().item() == 0.0  # padding row
    assert emb[1:].std().item() == pytest.approx(0.02, rel=0.05)
    assert model.model.layers[1].channel_mixer.l1.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_loss_is_shifted_cross_entropy_with_ignore_index():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    ids = torch.randint(1, 97, (2, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    out = model(ids, labels=labels, use_cache=False)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 97), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_causality():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    ids = torch.randint(1, 97, (1, 40))
    with torch.no_grad():
        base = model(ids, use_cache=False).logits
        for t in (0, 17, 39):
            changed = ids.clone()
            changed[0, t] = (ids[0, t] + 1) % 97
            out = model(changed, use_cache=False).logits
            assert torch.equal(out[:, :t], base[:, :t])
            assert not torch.allclose(out[:, t:], base[:, t:])


def test_left_padding_equals_unpadded():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    a, b = torch.randint(1, 97, (1, 13)), torch.randint(1, 97, (1, 8))
    batch = torch.zeros(2, 13, dtype=torch.long)
    batch[0] = a[0]
    batch[1, 5:] = b[0]
    mask = torch.ones(2, 13, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        out = model(batch, attention_mask=mask, use_cache=False).logits
        alone_a = model(a, use_cache=False).logits
        alone_b = model(b, use_cache=False).logits
    assert rel_err(out[0], alone_a[0]) < 1e-5
    assert rel_err(out[1, 5:], alone_b[0]) < 1e-5


def test_prefill_state_then_step_equals_full_forward():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    ids = torch.randint(1, 97, (2, 30))
    with torch.no_grad():
        full = model(ids, use_cache=False).logits
        out = model(ids[:, :20], use_cache=True)
        steps = [out.logits]
        for t in range(20, 30):
            out = model(ids[:, t : t + 1], cache=out.cache, use_cache=True)
            steps.append(out.logits)
    assert rel_err(torch.cat(steps, 1), full) < 1e-5
    assert out.cache.get_seq_length() == 30


def test_no_scale_embedding_and_layernorm_options():
    torch.manual_seed(0)
    cfg = _tiny_config(no_scale_embedding=True, norm_type="layernorm", linear_act_fun="none")
    model = TransnormerForCausalLM(cfg)
    assert model.model.embed_scale == 1.0
    assert "model.layers.0.token_norm.weight" in model.state_dict()
    out = model(torch.randint(1, 97, (1, 5)), use_cache=False)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize(
    "overrides,match",
    [({"hidden_dim": 30}, "divisible"), ({"linear_act_fun": "tanhh"}, "linear_act_fun must be one of"),
     ({"linear_use_lrpe_list": [1, 0, 0, 0, 0]}, "5 flags for 3 layers"),
     ({"linear_use_lrpe_list": "abc"}, "linear_use_lrpe_list must be a list of 0/1 flags"),
     ({"norm_type": "nope"}, "norm_type must be one of 'simplermsnorm', 'layernorm', 'rmsnorm'"),
     ({"decoder_attention_heads": 0}, "decoder_attention_heads must be a positive integer"),
     ({"decoder_layers": 4.5}, "decoder_layers must be a positive integer, got 4.5"),
     ({"decoder_layers": True}, "decoder_layers must be a positive integer, got True"),
     ({"bias": 1}, "bias must be true or false"), ({"eos_token_id": -2}, "eos_token_id must be a token id")],
)  # fmt: skip
def test_bad_configs_raise_config_errors_naming_the_field(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _tiny_config(**overrides)


def test_norm_type_is_never_silently_replaced():
    with pytest.raises(ConfigError, match="norm_type 'rms_norm' is unknown"):
        build_norm("rms_norm", 8)


def test_tiny_preset_trains():
    torch.manual_seed(0)
    model = create_model("tnl-tiny", seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    ids = torch.randint(3, 200, (4, 32))
    losses = []
    for _ in range(12):
        loss = model(ids, labels=ids, use_cache=False).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 1.0
    assert model.model.layers[0].token_mixer.lrpe.theta.grad is not None


def test_packed_documents_equal_each_document_alone():
    torch.manual_seed(0)
    model = TransnormerForCausalLM(_tiny_config()).eval()
    docs = [torch.randint(1, 97, (1, n)) for n in (7, 1, 30, 12)]
    packed = torch.cat(docs, dim=1)
    cu = torch.tensor([0, 7, 8, 38, 50])
    with torch.no_grad():
        out = model(packed, cu_seqlens=cu).logits
        alone = torch.cat([model(d, use_cache=False).logits for d in docs], dim=1)
        unpacked = model(packed, use_cache=False).logits
    assert rel_err(out, alone) < 1e-5
    assert rel_err(unpacked[:, 7:], alone[:, 7:]) > 1e-3  # without boundaries the documents mix
    with pytest.raises(ValueError, match="without a cache"):
        model(packed, cu_seqlens=cu, use_cache=True)


def test_param_groups_exclude_lrpe_theta_from_decay():
    model = TransnormerForCausalLM(_tiny_config())
    groups = {g["name"]: g for g in model.param_groups(lr=1e-3, weight_decay=0.1)}
    theta = model.model.layers[0].token_mixer.lrpe.theta
    assert any(p is theta for p in groups["lrpe.theta"]["params"]) and groups["lrpe.theta"]["weight_decay"] == 0.0
    assert groups["decay"]["weight_decay"] == 0.1
    n = sum(p.numel() for g in groups.values() for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # every parameter once, the tied head included
