"""Save / load round trips, the official TransNormerLLM directory layout, and clear errors on bad input."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
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
