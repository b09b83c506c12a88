"""Fixtures for the fine-tuning tests: a small BPE tokenizer with the chat markers, tiny model directories
of every family (random weights, that tokenizer beside them), and helpers to write chat data and configs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tnlm.data.sources import BuiltinSource
from tnlm.data.tokenizer import BASE_TOKENS, save_tokenizer, train_tokenizer
from tnlm.models.registry import create_model
from tnlm.training.config import FinetuneConfig, load_finetune_config
from tnlm.training.finetune.dialogues import BUILTIN

VOCAB = 512
# the tiny presets cut to two layers (each family's own field names)
FAMILIES = {
    "tnl-tiny": {"decoder_layers": 2, "linear_use_lrpe_list": [1, 0]},
    "transformer-tiny": {"num_hidden_layers": 2},
    "infini-tiny": {"num_hidden_layers": 2, "segment_length": 16},
}


def _texts() -> list[str]:
    chats = [json.loads(line) for line in BUILTIN["pydoc-chat"].read_text().splitlines()]
    docs = [d.text for d in BuiltinSource(kind="docs", max_files=0).read("0/1")][:200]
    return docs + [m["content"] for c in chats for m in c["messages"]]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A BPE tokenizer (VOCAB ids) that holds the chat markers, as `tnlm tokenizer train` makes them."""
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_tokenizer(_texts(), vocab_size=VOCAB, show_progress=False), folder, overwrite=True)
    return folder


@pytest.fixture(scope="session")
def plain_tokenizer_dir(tmp_path_factory) -> Path:
    """The same kind of tokenizer without the chat markers (another model's tokenizer)."""
    folder = tmp_path_factory.mktemp("plain-tok")
    tok = train_tokenizer(_texts(), vocab_size=VOCAB, special_tokens=BASE_TOKENS, show_progress=False)
    save_tokenizer(tok, folder, overwrite=True)
    return folder


def save_model(preset: str, folder: Path, tokenizer: Path, *, seed: int = 0, **overrides) -> Path:
    from transformers import AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer)))
    model = create_model(preset, overrides={**FAMILIES[preset], "vocab_size": vocab, **overrides}, seed=seed)
    model.save_pretrained(folder)
    for file in tokenizer.iterdir():
        shutil.copy2(file, folder / file.name)
    return folder


@pytest.fixture(scope="session")
def base_dirs(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    """A model directory of every family (random weights) with the tokenizer beside it."""
    root = tmp_path_factory.mktemp("bases")
    return {preset: save_model(preset, root / preset, tokenizer_dir) for preset in FAMILIES}


def write_chats(path: Path, dialogues: list[list[dict]]) -> Path:
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in dialogues))
    return path


def ft_config(output: Path, base: Path, *extra: str) -> FinetuneConfig:
    """A short fine-tuning run of `base` on the shipped chat set; `extra` are key=value overrides."""
    overrides = [
        f"output={output}", f"model.name={base}", "data.path=builtin:pydoc-chat", "data.seq_len=128",
        "data.batch_size=2", "optimizer.lr=3e-3", "schedule.warmup_steps=2", "train.steps=4", "eval.every=0",
        "eval.batches=2", "checkpoint.every=2", "log.progress=false", "log.tensorboard=false", "log.plot=false",
    ]  # fmt: skip
    return load_finetune_config(None, [*overrides, *extra])


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict:
    return {"role": "system", "content": text}
