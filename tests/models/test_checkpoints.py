"""Save / load round trips, the official TransNormerLLM directory layout, and clear errors on bad input."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

import tnlm.models  # noqa: F401  (registers the Auto classes)
from tests.helpers import rel_err
from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.registry import create_model
from tnlm.models.transnormer import TransnormerConfig, TransnormerForCausalLM

TINY = dict(vocab_size=211, decoder_embed_dim=32, hidden_dim=32, decoder_layers=2, decoder_attention_heads=4,
            glu_dim=48, linear_use_lrpe_list=[1, 0])  # fmt: skip


@pytest.fixture
def model():
    torch.manual_seed(0)
    return TransnormerForCausalLM(TransnormerConfig(**TINY)).eval()


def _logits(m, ids):
    with torch.no_grad():
        return m(ids, use_cache=False).logits


def test_save_and_reload_through_auto(tmp_path, model):
    ids = torch.randint(1, 211, (2, 17))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys  # tied head stored once
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded, TransnormerForCausalLM)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(_logits(loaded, ids), _logits(model, ids))
    assert torch.equal(_logits(create_model(tmp_path), ids), _logits(model, ids))


def _official_config() -> dict:
    return {
        "architectures": ["TransnormerForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_transnormer.TransnormerConfig",
            "AutoModelForCausalLM": "modeling_transnormer.TransnormerForCausalLM",
        },
        "model_type": "transnormer",
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "vocab_size": 211,
        "use_cache": True, "init_std": 0.02, "decoder_embed_dim": 32, "decoder_layers": 2,
        "decoder_attention_heads": 4, "no_scale_embedding": False, "add_bos_token": False,
        "norm_type": "simplermsnorm", "linear_use_lrpe_list": [1, 0], "hidden_dim": 32,
        "linear_act_fun": "swish", "glu_dim": 48, "bias": False,
        "torch_dtype": "bfloat16", "transformers_version": "4.31.0",
    }  # fmt: skip


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_official_layout_loads(tmp_path, model, fmt):
    """An official directory: remote-code auto_map, an explicit lm_head, a metaseq `decoder.version` key."""
    (tmp_path / "config.json").write_text(json.dumps(_official_config()))
    sd = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    sd["decoder.version"] = torch.tensor([3.0])
    if fmt == "safetensors":
        save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(sd, tmp_path / "pytorch_model.bin")
    ids = torch.randint(1, 211, (1, 23))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)  # no trust_remote_code
    assert isinstance(loaded, TransnormerForCausalLM)
    assert AutoModelForCausalLM.from_pretrained(tmp_path).dtype == torch.bfloat16  # HF honours torch_dtype
    assert create_model(tmp_path).dtype == torch.float32  # tnlm computes in float32 unless asked
    assert loaded.config.linear_act_fun == "swish"
    assert rel_err(_logits(loaded, ids), _logits(model, ids)) < 1e-6
    assert rel_err(_logits(create_model(tmp_path), ids), _logits(model, ids)) < 1e-6


def test_auto_config_knows_transnormer():
    cfg = AutoConfig.for_model("transnormer", decoder_layers=3)
    assert isinstance(cfg, TransnormerConfig) and cfg.decoder_layers == 3


def test_missing_directory():
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("/nonexistent/model-dir")


def test_unknown_preset():
    with pytest.raises(ConfigError, match="tnl-tiny"):
        create_model("tnl-9000b")


def test_directory_without_config(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        create_model(tmp_path)


def test_config_of_another_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match="'bert'"):
        create_model(tmp_path)


def test_weights_that_do_not_match_the_config(tmp_path, model):
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["glu_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="channel_mixer.l1.weight"):
        create_model(tmp_path)


def test_config_without_weights(tmp_path, model):
    model.config.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        create_model(tmp_path)


def test_corrupt_config_json(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        create_model(tmp_path)


def test_truncated_weights_are_refused_before_loading(tmp_path, model):
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="model.safetensors is not a readable safetensors file.*truncated"):
        create_model(tmp_path)


@pytest.mark.parametrize(
    "content,match",
    [(b"[1, 2, 3]", "JSON list, not an object"), (b'"transnormer"', "JSON str, not an object"),
     (b'{"model_type": "transnormer", "vocab_size": 211}\xff\xfe', "not UTF-8 text")],
    ids=["list", "string", "latin-1-bytes"],
)  # fmt: skip
def test_config_json_that_is_not_an_object_of_fields(tmp_path, content, match):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        create_model(tmp_path)


@pytest.mark.parametrize(
    "field,value,match",
    [("decoder_attention_heads", 0, "decoder_attention_heads must be a positive integer, got 0"),
     ("decoder_layers", 4.5, "decoder_layers must be a positive integer, got 4.5"),
     ("norm_type", "nope", "norm_type must be one of 'simplermsnorm', 'layernorm', 'rmsnorm', got 'nope'"),
     ("linear_use_lrpe_list", "abc", "linear_use_lrpe_list must be a list of 0/1 flags"),
     ("linear_use_lrpe_list", [1, 2], "linear_use_lrpe_list must be a list of 0/1 flags"),
     ("no_scale_embedding", "no", "no_scale_embedding must be true or false"),
     ("init_std", -0.02, "init_std must be a positive number"),
     ("pad_token_id", 500, r"pad_token_id \(500\) must be below vocab_size \(211\)")],
)  # fmt: skip
def test_every_config_field_is_checked_when_a_directory_loads(tmp_path, model, field, value, match):
    model.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, field: value}))
    with pytest.raises(CheckpointError, match="config.json is not a valid transnormer config: .*" + match):
        create_model(tmp_path)


def _rewrite_weights(path, *, drop: str | None = None, add: str | None = None) -> None:
    sd = load_file(str(path / "model.safetensors"))
    if drop:
        del sd[drop]
    if add:
        sd[add] = torch.zeros(3)
    save_file(sd, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_refused_with_its_name_unless_not_strict(tmp_path, model, capfd):
    model.save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, drop="model.layers.1.channel_mixer.l2.weight")
    missing = r"missing 1: model\.layers\.1\.channel_mixer\.l2\.weight\); .*strict=False"
    with pytest.raises(CheckpointError, match=missing):
        create_model(tmp_path)
    assert "LOAD REPORT" not in capfd.readouterr().err  # the one-line error says it all
    loaded = create_model(tmp_path, strict=False)  # asked for: the missing matrix starts at random
    assert torch.equal(loaded.model.layers[0].channel_mixer.l2.weight, model.model.layers[0].channel_mixer.l2.weight)


def test_unexpected_tensor_is_refused_with_its_name(tmp_path, model):
    model.save_pretrained(tmp_path)
    _rewrite_weights(tmp_path, add="model.layers.7.extra.weight")
    with pytest.raises(CheckpointError, match=r"unexpected 1: model\.layers\.7\.extra\.weight"):
        create_model(tmp_path)


def test_missing_tensor_in_a_pytorch_bin_is_refused(tmp_path, model):
    (tmp_path / "config.json").write_text(json.dumps(_official_config()))
    sd = {k: v.clone() for k, v in model.state_dict().items() if k != "model.final_norm.weight"}
    sd.pop("model.layers.0.token_mixer.qkvu_proj.weight")
    torch.save(sd, tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"missing 1: model\.layers\.0\.token_mixer\.qkvu_proj\.weight"):
        create_model(tmp_path)


@pytest.mark.parametrize("name", ["tnl-tiny", "transformer-tiny", "infini-tiny"])
def test_override_keys_the_family_does_not_have_are_refused(name):
    with pytest.raises(ConfigError, match=r"has no field 'decoder_embed_dims'; its fields: vocab_size, "):
        create_model(name, overrides={"decoder_embed_dims": 512})


def test_override_of_another_familys_field_names_the_fields_it_has(tmp_path, model):
    with pytest.raises(ConfigError, match="TransformerConfig has no field 'decoder_embed_dim'; its fields: .*hidden_"):
        create_model("transformer-tiny", overrides={"decoder_embed_dim": 512})
    model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="TransnormerConfig has no field 'hidden_size'"):
        create_model(tmp_path, overrides={"hidden_size": 64})
    assert create_model(tmp_path, overrides={"use_cache": False}).config.use_cache is False
