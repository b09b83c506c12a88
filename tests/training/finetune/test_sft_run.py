"""Fine-tuning runs: only adapters train under LoRA, a handful of dialogues teach the answer format, exact
resume, packing per family, and the refusals a careless config meets."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from tnlm.errors import CheckpointError, ConfigError
from tnlm.generation import ChatSession, HFTokenizer
from tnlm.models.registry import create_model
from tnlm.training.finetune import finetune
from tnlm.training.finetune.build import build_finetune_trainer
from tnlm.training.logs import read_metrics

from .conftest import FAMILIES, assistant, ft_config, user, write_chats


@pytest.mark.parametrize("preset", list(FAMILIES))
def test_lora_training_changes_the_adapters_and_nothing_else(base_dirs, preset, tmp_path):
    trainer, _ = build_finetune_trainer(ft_config(tmp_path / "run", base_dirs[preset]))
    model = trainer.model
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in trainable.values()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(2):
        trainer.train_step()
    for name, p in model.named_parameters():
        changed = not torch.equal(p, before[name])
        assert changed == (name in trainable), name


def test_full_finetuning_trains_every_weight(base_dirs, tmp_path):
    trainer, _ = build_finetune_trainer(ft_config(tmp_path / "run", base_dirs["tnl-tiny"], "method=full"))
    in_optimizer = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in trainer.model.parameters()}
    assert type(trainer.model).__name__ == "TransnormerForCausalLM"


QUESTIONS = ["What is a cat?", "What is a dog?", "What is a tree?", "What is the sun?", "What is rain?", "What is a boat?"]
ANSWER = re.compile(r"^ANSWER: \w+( \w+)* \[ok\]$")


def answer(question: str) -> str:
    thing = question.removeprefix("What is ").rstrip("?").split()[-1]
    return f"ANSWER: {thing} is a word [ok]"


def reply(model_dir, question: str) -> tuple[str, str]:
    from transformers import AutoTokenizer

    session = ChatSession(create_model(model_dir), HFTokenizer(AutoTokenizer.from_pretrained(str(model_dir))))
    text = "".join(session.send(question, max_new_tokens=24))
    return text, session.messages[-1]["content"]


def test_a_handful_of_dialogues_teaches_the_answer_format(base_dirs, tmp_path):
    data = write_chats(tmp_path / "chats.jsonl", [[user(q), assistant(answer(q))] for q in QUESTIONS])
    base = base_dirs["tnl-tiny"]
    before, _ = reply(base, "What is a cat?")
    assert not ANSWER.match(before)
    cfg = ft_config(tmp_path / "run", base, f"data.path={data}", "data.val_fraction=0", "method=full",
                    "train.steps=40", "optimizer.lr=3e-3", "checkpoint.every=100")  # fmt: skip
    result = finetune(cfg)
    assert result.model_dir == tmp_path / "run" / "model" and result.val_loss < 0.5
    for question in ("What is a cat?", "What is the sun?"):
        text, _ = reply(result.model_dir, question)
        assert ANSWER.match(text), text  # and it stopped at the end marker, not the token limit
    assert ANSWER.match(reply(result.model_dir, "What is a house?")[0])  # a question it never saw


def test_lora_run_writes_an_adapter_with_its_tokenizer(base_dirs, tmp_path):
    result = finetune(ft_config(tmp_path / "run", base_dirs["transformer-tiny"], "data.samples=turn"))
    adapter = result.model_dir
    assert adapter == tmp_path / "run" / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "finetune.json"):
        assert (adapter / name).is_file(), name
    assert not (tmp_path / "run" / "model").exists()


def history(run_dir):
    return [{k: v for k, v in r.items() if k not in ("tokens_per_s", "mfu", "time")}
            for r in read_metrics(run_dir / "metrics.jsonl")]  # fmt: skip


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_resumed_run_continues_exactly(base_dirs, tmp_path, method):
    cfg = ft_config(tmp_path / "run", base_dirs["tnl-tiny"], f"method={method}", "train.steps=6", "checkpoint.every=3",
                    "checkpoint.keep=3", "eval.every=2", "lora.dropout=0.1")  # fmt: skip
    finetune(cfg)
    reference = history(tmp_path / "run")
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step-000006")
    shutil.rmtree(tmp_path / "run" / ("adapter" if method == "lora" else "model"))
    finetune(cfg, resume=True)
    assert history(tmp_path / "run") == reference
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune(cfg)


def test_packing_is_used_where_the_family_takes_it_and_refused_where_not(base_dirs, tmp_path):
    packed, _ = build_finetune_trainer(ft_config(tmp_path / "a", base_dirs["tnl-tiny"]))
    padded, _ = build_finetune_trainer(ft_config(tmp_path / "b", base_dirs["transformer-tiny"]))
    assert packed.train_loader.config.packed and not padded.train_loader.config.packed
    assert "cu_seqlens" in next(iter(packed.train_loader)) and "cu_seqlens" not in next(iter(padded.train_loader))
    with pytest.raises(ConfigError, match="data.packing=true packs dialogues with cu_seqlens, which tnlm_transformer "
                                          "does not take; set data.packing=false"):  # fmt: skip
        build_finetune_trainer(ft_config(tmp_path / "c", base_dirs["transformer-tiny"], "data.packing=true"))


def test_careless_configs_are_refused(base_dirs, tmp_path):
    with pytest.raises(ConfigError, match="is a preset .* fine-tune a model directory"):
        build_finetune_trainer(ft_config(tmp_path / "a", "tnl-tiny"))
    with pytest.raises(CheckpointError, match="does not exist"):
        build_finetune_trainer(ft_config(tmp_path / "b", tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="which this transnormer model does not have; its linear layers are: l1"):
        build_finetune_trainer(ft_config(tmp_path / "c", base_dirs["tnl-tiny"], "lora.target_modules=[q_proj]"))
    with pytest.raises(ConfigError, match="unknown config key data.mode"):
        ft_config(tmp_path / "d", base_dirs["tnl-tiny"], "data.mode=varlen")
    with pytest.raises(ConfigError, match="method is 'qlora'; choose one of lora, full"):
        ft_config(tmp_path / "e", base_dirs["tnl-tiny"], "method=qlora")


def test_lora_composes_with_activation_checkpointing(base_dirs, tmp_path):
    plain, _ = build_finetune_trainer(ft_config(tmp_path / "a", base_dirs["tnl-tiny"], "lora.dropout=0"))
    recomputed, _ = build_finetune_trainer(ft_config(tmp_path / "b", base_dirs["tnl-tiny"], "lora.dropout=0",
                                                     "train.activation_checkpointing=true"))  # fmt: skip
    batches = plain.next_micro_batches()
    assert plain.forward_backward(batches) == pytest.approx(recomputed.forward_backward(batches), rel=1e-6)
    for (name, a), b in zip(plain.model.named_parameters(), recomputed.model.parameters(), strict=True):
        assert (a.grad is None) == (b.grad is None), name
        if a.grad is not None:
            assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-7), name
