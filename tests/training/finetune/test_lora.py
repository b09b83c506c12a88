"""LoRA through peft on every family: default targets, merged = base + adapter, peft's own loading, the
chat markers' embedding rows, and the target a model lacks."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoTokenizer

from tests.helpers import rel_err
from tnlm.chat_template import MARKER_TOKENS
from tnlm.errors import CheckpointError, ConfigError
from tnlm.models.registry import create_model
from tnlm.training.config import LoraSection
from tnlm.training.finetune.lora import DEFAULT_TARGETS, apply_lora, linear_names, merge_lora, save_adapter
from tnlm.training.finetune.tokens import add_markers, fit_embeddings

from .conftest import FAMILIES, save_model

IDS = torch.tensor([[5, 17, 300, 42, 8, 99, 250, 3, 61, 7, 12, 400, 33, 21, 90, 2, 150, 44, 18, 5]])  # (1, 20)
LORA = LoraSection(rank=4, alpha=8.0, dropout=0.0)


def randomize_adapters(model: torch.nn.Module, *, seed: int = 0) -> None:
    """LoRA's B starts at zero (the adapter adds nothing): give every trainable tensor random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, use_cache=False).logits


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_only_the_default_targets_get_adapters_and_only_adapters_train(base_dirs, preset):
    model = apply_lora(create_model(base_dirs[preset]), LORA)
    targets = DEFAULT_TARGETS[model.config.model_type]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert adapted == set(targets)
    layers = model.config.num_hidden_layers
    assert len(trainable) == 2 * len(targets) * layers


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_merged_model_equals_base_plus_adapter(base_dirs, preset, tmp_path):
    base = base_dirs[preset]
    model = apply_lora(create_model(base), LORA)
    randomize_adapters(model)
    with_adapter = logits(model)
    plain = logits(create_model(base))
    assert rel_err(with_adapter, plain) > 1e-3  # the adapter changes the output
    adapter = save_adapter(model, tokenizer=base, out=tmp_path / "adapter", base=str(base), added=None)
    # peft loads it (the format is peft's own), and the same logits come out
    loaded = PeftModel.from_pretrained(create_model(base), str(adapter))
    assert torch.equal(logits(loaded), with_adapter)
    # merged: a plain model directory with the tokenizer; W + (alpha / r) B A, within 1e-5
    merged_dir = merge_lora(base, adapter, tmp_path / "merged")
    merged = create_model(merged_dir)
    assert (logits(merged) - with_adapter).abs().max() < 1e-5 * with_adapter.abs().max()
    assert AutoTokenizer.from_pretrained(str(merged_dir)).get_vocab() == AutoTokenizer.from_pretrained(str(base)).get_vocab()
    with safe_open(str(merged_dir / "model.safetensors"), framework="pt") as f:
        assert not any("lora" in k for k in f.keys())
    name = f"{DEFAULT_TARGETS[merged.config.model_type][0]}.weight"
    key = next(k for k in merged.state_dict() if k.endswith(name))
    layer = model.get_submodule(f"base_model.model.{key.removesuffix('.weight')}")
    delta = (LORA.alpha / LORA.rank) * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    expected = create_model(base).state_dict()[key] + delta
    assert rel_err(merged.state_dict()[key], expected) < 1e-6


def test_a_target_the_model_lacks_is_refused_with_the_ones_it_has(base_dirs):
    model = create_model(base_dirs["tnl-tiny"])
    with pytest.raises(ConfigError, match=r"names q_proj, which this transnormer model does not have; its linear "
                                          r"layers are: l1, l2, l3, lm_head, out_proj, qkvu_proj"):  # fmt: skip
        apply_lora(model, LoraSection(target_modules=["qkvu_proj", "q_proj"]))
    assert linear_names(create_model(base_dirs["transformer-tiny"])) == [
        "down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj"]  # fmt: skip


def test_chosen_targets_are_the_only_ones_adapted(base_dirs):
    model = apply_lora(create_model(base_dirs["transformer-tiny"]), LoraSection(target_modules=["q_proj", "v_proj"]))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if p.requires_grad}
    assert adapted == {"q_proj", "v_proj"}


@pytest.mark.parametrize("tied", [True, False], ids=["tied-head", "untied-head"])
def test_missing_markers_are_added_with_mean_rows_that_lora_trains_and_merges(plain_tokenizer_dir, tmp_path, tied):
    base = save_model("transformer-tiny", tmp_path / "base", plain_tokenizer_dir, tie_word_embeddings=tied)
    tok = AutoTokenizer.from_pretrained(str(base))
    before = len(tok)
    assert add_markers(tok) == list(MARKER_TOKENS) and len(tok) == before + 2
    model = create_model(base)
    old = model.get_input_embeddings().weight.detach().clone()
    new_ids = [tok.convert_tokens_to_ids(t) for t in MARKER_TOKENS]
    added = fit_embeddings(model, vocab_size=len(tok), new_ids=new_ids)
    assert added.base_vocab_size == before and model.config.vocab_size == before + 2
    weight = model.get_input_embeddings().weight
    assert torch.equal(weight[:before], old)
    for i in new_ids:
        assert torch.allclose(weight[i], old.mean(dim=0), atol=1e-7)
    peft_model = apply_lora(model, LORA, added=added)
    deltas = [n for n, p in peft_model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
    assert len(deltas) == (1 if tied else 2)  # the embedding's marker rows (and the untied head's)
    randomize_adapters(peft_model)
    marker_ids = torch.tensor([[*new_ids, 5, new_ids[1], 9]])
    with torch.no_grad():
        expected = peft_model(input_ids=marker_ids, use_cache=False).logits
    tok.save_pretrained(str(tmp_path / "tok"))
    adapter = save_adapter(peft_model, tokenizer=tmp_path / "tok", out=tmp_path / "adapter", base=str(base), added=added)
    merged = create_model(merge_lora(base, adapter, tmp_path / "merged"))
    with torch.no_grad():
        got = merged(input_ids=marker_ids, use_cache=False).logits
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


def test_merge_refuses_a_wrong_base_and_an_occupied_output(base_dirs, tmp_path):
    model = apply_lora(create_model(base_dirs["tnl-tiny"]), LORA)
    adapter = save_adapter(model, tokenizer=base_dirs["tnl-tiny"], out=tmp_path / "adapter", base="x", added=None)
    with pytest.raises(CheckpointError, match="does not fit the model"):
        merge_lora(base_dirs["transformer-tiny"], adapter, tmp_path / "m")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "f").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        merge_lora(base_dirs["tnl-tiny"], adapter, tmp_path / "busy")
    with pytest.raises(CheckpointError, match="no adapter_config.json"):
        merge_lora(base_dirs["tnl-tiny"], tmp_path, tmp_path / "m")
