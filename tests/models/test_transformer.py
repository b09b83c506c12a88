"""The Transformer baseline: cache decoding, left padding, causality, configs, save/load, presets."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

import tnlm
from tests.helpers import rel_err
from tnlm.errors import ConfigError
from tnlm.models.registry import meta_model
from tnlm.models.transformer import KVCache, TransformerConfig, TransformerForCausalLM

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra threads only add contention


def tiny(**overrides: object) -> TransformerForCausalLM:
    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6,
              num_key_value_heads=2, rope_theta=500.0, tie_word_embeddings=False)  # fmt: skip
    torch.manual_seed(0)
    return TransformerForCausalLM(TransformerConfig(**{**kw, **overrides})).eval()


def decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, *, prefill: int) -> torch.Tensor:
    """Prefill, then one token at a time with the cache and the growing mask; logits (B, T, V)."""
    out = model(ids[:, :prefill], attention_mask=mask[:, :prefill], use_cache=True)
    logits, cache = [out.logits], out.cache
    for t in range(prefill, ids.shape[1]):
        out = model(ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache, use_cache=True)
        logits.append(out.logits)
    return torch.cat(logits, dim=1)


def left_pad(seqs: list[torch.Tensor], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, T - len(s) :], mask[b, T - len(s) :] = s, 1
    return ids, mask


@pytest.mark.parametrize("position_embedding", ["rope", "alibi"])
@torch.no_grad()
def test_cached_decoding_equals_full_forward_with_left_padding(position_embedding: str) -> None:
    model = tiny(position_embedding=position_embedding)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(3, 97, (n,), generator=g) for n in (310, 297)]
    ids, mask = left_pad(seqs)
    full = model(ids, attention_mask=mask).logits
    assert rel_err(decode(model, ids, mask, prefill=40), full) < 1e-4
    for b, s in enumerate(seqs):  # padding changes nothing at the real positions
        alone = model(s[None]).logits[0]
        assert rel_err(full[b, -len(s) :], alone) < 1e-5


@torch.no_grad()
def test_cache_holds_every_token_and_reports_length() -> None:
    model = tiny()
    out = model(torch.randint(3, 97, (2, 11)), use_cache=True)
    assert isinstance(out.cache, KVCache) and out.cache.get_seq_length() == 11
    kv = out.cache.layers[0]
    assert kv.k.shape == (2, 11, 2, 8) and kv.v.shape == (2, 11, 2, 8)
    k11 = kv.k.clone()
    out = model(torch.randint(3, 97, (2, 1)), past_key_values=out.cache)  # the HF name works too
    assert out.cache.get_seq_length() == 12 and kv.k.shape[1] == 12
    assert torch.equal(kv.k[:, :11], k11)  # the past is kept, the new token appended in place
    assert kv.capacity >= 12 and out.cache.nbytes() == sum(layer.nbytes() for layer in out.cache.layers)


@pytest.mark.parametrize("position_embedding", ["rope", "alibi"])
@torch.no_grad()
def test_causality(position_embedding: str) -> None:
    model = tiny(position_embedding=position_embedding)
    ids = torch.randint(3, 97, (1, 40))
    changed = ids.clone()
    changed[:, 25:] = torch.randint(3, 97, (1, 15))
    a, b = model(ids).logits, model(changed).logits
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-6)
    assert not torch.allclose(a[:, 25:], b[:, 25:], atol=1e-3)


def test_loss_backward_and_tied_head() -> None:
    model = tiny(tie_word_embeddings=True).train()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(3, 97, (2, 17))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert 3.0 < out.loss.item() < 6.0  # about log(97) at initialisation
    assert all(p.grad is not None for p in model.parameters())


def test_save_load_round_trip(tmp_path) -> None:
    model = tiny(position_embedding="alibi", num_key_value_heads=1)
    model.save_pretrained(tmp_path)
    ids = torch.randint(3, 97, (2, 13))
    for loaded in (AutoModelForCausalLM.from_pretrained(tmp_path), tnlm.create_model(tmp_path)):
        assert isinstance(loaded, TransformerForCausalLM)
        assert loaded.config.position_embedding == "alibi" and loaded.config.num_key_value_heads == 1
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids).logits, model(ids).logits)


@pytest.mark.parametrize(
    "overrides,field",
    [({"num_attention_heads": 6, "num_key_value_heads": 4}, "num_key_value_heads"),
     ({"position_embedding": "sinusoidal"}, "position_embedding"),
     ({"rope_type": "yarn"}, "rope_type"),
     ({"hidden_size": 0}, "hidden_size"),
     ({"head_dim": 7}, "head_dim"),
     ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
     ({"num_hidden_layers": 4.5}, "num_hidden_layers must be a positive integer, got 4.5"),
     ({"rms_norm_eps": 0.0}, "rms_norm_eps must be a positive number"),
     ({"rope_theta": float("inf")}, "rope_theta must be a positive number"),
     ({"attention_bias": "no"}, "attention_bias must be true or false"),
     ({"rope_type": "llama3", "rope_low_freq_factor": 4.0}, "rope_high_freq_factor"),
     ({"tie_word_embeddings": None}, "tie_word_embeddings must be true or false"),
     ({"pad_token_id": 97}, "pad_token_id")],
    ids=["heads-not-divisible", "unknown-position-embedding", "unknown-rope-type", "zero-width", "odd-rope-head-dim",
         "zero-heads", "fractional-layers", "zero-eps", "infinite-theta", "string-bool", "llama3-factors",
         "null-tie", "pad-outside-vocab"],
)  # fmt: skip
def test_bad_configs_raise_config_error_naming_the_field(overrides: dict, field: str) -> None:
    kw = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=6)
    with pytest.raises(ConfigError, match=field):
        TransformerConfig(**{**kw, **overrides})


def test_presets_match_transnormer_shapes() -> None:
    for tnl, baseline in (("tnl-tiny", "transformer-tiny"), ("tnl-385m", "transformer-385m")):
        a, b = tnlm.load_config(tnl), tnlm.load_config(baseline)
        assert (a.hidden_size, a.num_hidden_layers, a.num_attention_heads, a.glu_dim, a.vocab_size) == (
            b.hidden_size, b.num_hidden_layers, b.num_attention_heads, b.intermediate_size, b.vocab_size)  # fmt: skip
    n = sum(p.numel() for p in meta_model("transformer-385m").parameters())
    assert 3.5e8 < n < 4.0e8


def test_param_groups_decay_only_matrices() -> None:
    model = tiny()
    groups = {g["name"]: g for g in model.param_groups(lr=1e-3, weight_decay=0.1)}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    embedding = model.model.embed_tokens.weight
    assert all(p.dim() == 1 or p is embedding for p in groups["no_decay"]["params"])
    assert any(p is embedding for p in groups["no_decay"]["params"])  # no decay on the embedding table
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_mask_must_cover_cache_and_new_tokens() -> None:
    model = tiny()
    cache = model(torch.randint(3, 97, (1, 5)), use_cache=True).cache
    with pytest.raises(ValueError, match="past"):
        model(torch.randint(3, 97, (1, 1)), attention_mask=torch.ones(1, 1), cache=cache)
