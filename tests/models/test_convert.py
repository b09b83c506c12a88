"""Hugging Face Llama <-> tnlm Transformer: logits parity both ways, RoPE configurations, the CLI."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from typer.testing import CliRunner

from tests.helpers import rel_err
from tnlm.cli.main import app
from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.convert import convert_checkpoint, llama_to_tnlm, tnlm_to_llama
from tnlm.models.infini import InfiniConfig
from tnlm.models.registry import create_model
from tnlm.models.transformer import TransformerConfig, TransformerForCausalLM

ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
}  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: extra threads only add contention


def random_llama(rope: dict | None = None, *, tie: bool = False, **extra: object) -> LlamaForCausalLM:
    torch.manual_seed(0)
    shape = dict(vocab_size=101, hidden_size=64, intermediate_size=88, num_hidden_layers=2, num_attention_heads=8,
                 num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    config = LlamaConfig(rope_parameters=rope, tie_word_embeddings=tie, **{**shape, **extra})
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1 so a dropped norm weight shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("rope", list(ROPES), ids=list(ROPES))
@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
@torch.no_grad()
def test_llama_gqa_logits_match_both_ways(rope: str, tie: bool) -> None:
    llama = random_llama(ROPES[rope], tie=tie)
    ids = torch.randint(0, 101, (2, 150))  # past original_max_position_embeddings for llama3
    expected = llama(ids).logits
    ours = llama_to_tnlm(llama)
    assert isinstance(ours, TransformerForCausalLM) and ours.config.num_key_value_heads == 2
    assert rel_err(ours(ids).logits, expected) <= 1e-5
    back = tnlm_to_llama(ours)
    assert back.config.rope_parameters == llama.config.rope_parameters
    assert rel_err(back(ids).logits, expected) <= 1e-5
    assert (ours.lm_head.weight is ours.model.embed_tokens.weight) == tie


@pytest.mark.parametrize(
    "extra", [{"head_dim": 12}, {"attention_bias": True, "mlp_bias": True}, {"num_key_value_heads": 1}],
    ids=["head_dim-12", "biases", "MQA"],
)
@torch.no_grad()
def test_llama_variants_match(extra: dict) -> None:
    llama = random_llama(**extra)
    ids = torch.randint(0, 101, (2, 37))
    ours = llama_to_tnlm(llama)
    assert rel_err(ours(ids).logits, llama(ids).logits) <= 1e-5
    assert rel_err(tnlm_to_llama(ours)(ids).logits, llama(ids).logits) <= 1e-5


@torch.no_grad()
def test_parity_check_can_fail() -> None:
    """A wrong RoPE theta must show: the tolerance above is not vacuous."""
    llama = random_llama()
    ours = llama_to_tnlm(llama)
    wrong = TransformerForCausalLM(TransformerConfig(**{**ours.config.to_diff_dict(), "rope_theta": 20000.0}))
    wrong.load_state_dict(ours.state_dict())
    ids = torch.randint(0, 101, (1, 64))
    assert rel_err(wrong.eval()(ids).logits, llama(ids).logits) > 1e-3


def test_what_llama_cannot_express_is_refused() -> None:
    small = dict(vocab_size=101, hidden_size=64, intermediate_size=88, num_hidden_layers=1, num_attention_heads=8)
    with pytest.raises(ConfigError, match="alibi"):
        tnlm_to_llama(TransformerForCausalLM(TransformerConfig(position_embedding="alibi", **small)))
    with pytest.raises(ConfigError, match="ntk"):
        tnlm_to_llama(TransformerForCausalLM(TransformerConfig(rope_type="ntk", rope_factor=2.0, **small)))
    with pytest.raises(ConfigError, match="dynamic"):
        llama_to_tnlm(random_llama({"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}))
    with pytest.raises(ConfigError, match="Transformer family"):
        from tnlm.models.convert import tnlm_config_to_llama

        tnlm_config_to_llama(InfiniConfig(segment_length=8, **small))


def test_convert_command_round_trip(tmp_path) -> None:
    llama = random_llama(ROPES["linear"])
    llama.save_pretrained(tmp_path / "llama")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "llama"), str(tmp_path / "ours")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["convert", str(tmp_path / "ours"), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    ids = torch.randint(0, 101, (1, 40))
    with torch.no_grad():
        expected = llama(ids).logits
        ours = create_model(tmp_path / "ours")
        assert ours.config.rope_type == "linear" and ours.config.rope_factor == 2.0
        assert rel_err(ours(ids).logits, expected) <= 1e-5
        back = LlamaForCausalLM.from_pretrained(tmp_path / "back").eval()
        assert rel_err(back(ids).logits, expected) <= 1e-5


def test_convert_refuses_to_overwrite_and_unknown_models(tmp_path) -> None:
    random_llama().save_pretrained(tmp_path / "llama")
    (tmp_path / "taken").mkdir()
    with pytest.raises(CheckpointError, match="already exists"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "taken")
    with pytest.raises(ConfigError, match="other format"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "x", to="llama")
    create_model("tnl-tiny").save_pretrained(tmp_path / "tnl")
    with pytest.raises(CheckpointError, match="transnormer"):
        convert_checkpoint(tmp_path / "tnl", tmp_path / "y")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_convert_refuses_a_source_missing_a_tensor_unless_not_strict(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    random_llama().save_pretrained(tmp_path / "llama")
    weights = tmp_path / "llama" / "model.safetensors"
    sd = load_file(str(weights))
    del sd["model.layers.1.mlp.up_proj.weight"]
    save_file(sd, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing 1: model\.layers\.1\.mlp\.up_proj\.weight"):
        convert_checkpoint(tmp_path / "llama", tmp_path / "ours")
    assert not (tmp_path / "ours").exists()
    assert convert_checkpoint(tmp_path / "llama", tmp_path / "ours", strict=False) == "tnlm"
    assert create_model(tmp_path / "ours").config.num_hidden_layers == 2
