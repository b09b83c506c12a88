"""The Infini-attention model: segment-wise equivalence, cached decoding across segment boundaries,
left padding, bounded memory, gradients through the memory, parameter groups, configs, save/load."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import tnlm
from tests.helpers import rel_err
from tnlm.errors import ConfigError
from tnlm.models.infini import InfiniCache, InfiniConfig, InfiniForCausalLM, InfiniModel

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra threads only add contention


def tiny(**overrides: object) -> InfiniForCausalLM:
    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, rope_theta=500.0, segment_length=16)  # fmt: skip
    torch.manual_seed(0)
    model = InfiniForCausalLM(InfiniConfig(**{**kw, **overrides})).eval()
    with torch.no_grad():  # gates away from 0.5, different per head, so a wrong mix shows
        for layer in model.model.layers:
            layer.self_attn.gate.copy_(torch.linspace(-2, 2, layer.self_attn.num_heads))
    return model


def decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, *, prefill: int) -> tuple[torch.Tensor, list[int]]:
    """Prefill, then one token at a time; logits (B, T, V) and the cache size after each step."""
    out = model(ids[:, :prefill], attention_mask=mask[:, :prefill], use_cache=True)
    logits, cache, sizes = [out.logits], out.cache, []
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache)
        logits.append(out.logits)
        sizes.append(cache.nbytes())
    return torch.cat(logits, dim=1), sizes


@pytest.mark.parametrize("rule,position_embedding", [("linear", "rope"), ("delta", "rope"), ("linear", "alibi")])
@torch.no_grad()
def test_one_call_equals_segment_by_segment(rule: str, position_embedding: str) -> None:
    model = tiny(memory_rule=rule, position_embedding=position_embedding)
    ids = torch.randint(3, 97, (2, 77))
    full = model(ids).logits
    cache, parts = None, []
    for start in range(0, 77, 16):  # the memory carried over in the cache
        out = model(ids[:, start : start + 16], cache=cache, use_cache=True)
        cache = out.cache
        parts.append(out.logits)
    assert rel_err(torch.cat(parts, dim=1), full) < 1e-5
    assert cache.layers[0].base.tolist() == [4, 4]  # four complete segments absorbed
    # and the memory matters: without it (one segment = whole input) the late logits differ
    assert rel_err(model(ids[:, 64:]).logits, full[:, 64:]) > 1e-2


@pytest.mark.parametrize("rule", ["linear", "delta"])
@torch.no_grad()
def test_cached_decoding_across_segments_with_left_padding(rule: str) -> None:
    model = tiny(memory_rule=rule)  # segments of 16: the 132 decoded tokens cross eight of them
    g = torch.Generator().manual_seed(1)
    lengths = (153, 131)  # 22 pads: more than a whole segment
    ids = torch.zeros(2, 153, dtype=torch.long)
    mask = torch.zeros(2, 153, dtype=torch.long)
    for b, n in enumerate(lengths):  # left padding: segment boundaries fall at different columns
        ids[b, 153 - n :], mask[b, 153 - n :] = torch.randint(3, 97, (n,), generator=g), 1
    full = model(ids, attention_mask=mask).logits
    for b, n in enumerate(lengths):
        assert rel_err(full[b, -n:], model(ids[b : b + 1, -n:]).logits[0]) < 1e-5
    stepped, sizes = decode(model, ids, mask, prefill=21)
    assert rel_err(stepped, full) < 1e-4
    # bounded state: memory plus at most two segments of keys, however many segments went by
    assert max(sizes[75:]) <= max(sizes[:50])


@torch.no_grad()
def test_state_size_does_not_grow_with_segments() -> None:
    model = tiny(segment_length=8)
    cache, sizes = None, []
    for _ in range(12):
        out = model(torch.randint(3, 97, (1, 8)), cache=cache, use_cache=True)
        cache = out.cache
        sizes.append(cache.nbytes())
    assert isinstance(cache, InfiniCache) and cache.get_seq_length() == 96
    assert len(set(sizes)) == 1  # each call completes a segment: only the memory remains


@pytest.mark.parametrize("detach", [False, True])
def test_gradient_reaches_first_segment_from_last_segment_loss(detach: bool) -> None:
    model = tiny(detach_memory=detach).train()
    embeds = model.get_input_embeddings()(torch.randint(3, 97, (1, 64))).detach().requires_grad_()
    logits = model(inputs_embeds=embeds).logits
    logits[:, 48:].logsumexp(-1).sum().backward()  # a loss on the last segment only
    first = embeds.grad[:, :16].norm()
    if detach:  # truncation asked for: nothing crosses a segment boundary
        assert first == 0
    else:
        assert first > 1e-6 * embeds.grad[:, 48:].norm()
    gate = model.model.layers[0].self_attn.gate
    assert gate.grad is not None and gate.grad.abs().min() > 0


@torch.no_grad()
def test_causality() -> None:
    model = tiny()
    ids = torch.randint(3, 97, (1, 50))
    changed = ids.clone()
    changed[:, 37:] = torch.randint(3, 97, (1, 13))
    a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :37], b[:, :37], atol=1e-6)
    assert not torch.allclose(a[:, 37:], b[:, 37:], atol=1e-3)


def test_param_groups_give_the_gate_its_own_lr_and_no_decay() -> None:
    model = tiny(gate_lr_multiplier=5.0)
    groups = {g["name"]: g for g in model.param_groups(lr=1e-3, weight_decay=0.1)}
    gate_group = groups["self_attn.gate"]
    assert gate_group["lr"] == pytest.approx(5e-3) and gate_group["weight_decay"] == 0.0
    assert len(gate_group["params"]) == 2 and all(p.shape == (6,) for p in gate_group["params"])
    assert all(p.dim() >= 2 for p in groups["decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))
    torch.optim.AdamW(model.param_groups(lr=1e-3, weight_decay=0.1))  # usable as is


@pytest.mark.parametrize(
    "overrides,field",
    [({"segment_length": 0}, "segment_length"), ({"num_key_value_heads": 4}, "num_key_value_heads"),
     ({"position_embedding": "learned"}, "position_embedding"), ({"memory_rule": "gated"}, "memory_rule")],
    ids=["segment-0", "heads-not-divisible", "unknown-position-embedding", "unknown-rule"],
)  # fmt: skip
def test_bad_configs_raise_config_error_naming_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        InfiniConfig(hidden_size=48, num_attention_heads=6, **overrides)


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny(memory_rule="delta")
    model.save_pretrained(tmp_path)
    ids = torch.randint(3, 97, (1, 40))
    for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path), tnlm.create_model(tmp_path)):
        assert isinstance(loaded, InfiniForCausalLM) and loaded.config.memory_rule == "delta"
        with torch.no_grad():
            assert torch.equal(loaded.model.layers[1].self_attn.gate, model.model.layers[1].self_attn.gate)
            assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)


def test_tiny_preset_shares_tnl_tiny_shape() -> None:
    a, b = tnlm.load_config("tnl-tiny"), tnlm.load_config("infini-tiny")
    assert (a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.glu_dim) == (
        b.hidden_size, b.num_hidden_layers, b.num_attention_heads, b.intermediate_size)  # fmt: skip


def test_gates_start_at_gate_init_in_both_classes() -> None:
    config = InfiniConfig(hidden_size=48, num_attention_heads=6, num_hidden_layers=2, vocab_size=97, gate_init=1.5)
    for model in (InfiniForCausalLM(config), InfiniModel(config)):
        layers = model.model.layers if isinstance(model, InfiniForCausalLM) else model.layers
        assert all(torch.equal(layer.self_attn.gate, torch.full((6,), 1.5)) for layer in layers)
