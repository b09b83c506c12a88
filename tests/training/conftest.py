"""Fixtures for the training tests: token shards of real English text (Python's help topics, present on
every machine), packed by the project's own tokenizer trainer and packer, and small run configs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO
from tnlm.data.files import write_documents
from tnlm.data.pack import pack
from tnlm.data.sources import BuiltinSource
from tnlm.data.tokenizer import save_tokenizer, train_tokenizer
from tnlm.training import TrainConfig, load_train_config

VOCAB = 512


@pytest.fixture(autouse=True)
def _tiny_models_use_one_thread(one_thread):
    """Every test here trains tiny models: one thread (the shared fixture), as the `tnlm` subprocesses."""
    yield


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Packed shards (train + val) of the help topics, with their tokenizer; returns the shard folder."""
    root = tmp_path_factory.mktemp("corpus")
    docs = list(BuiltinSource(kind="docs", max_files=0).read("0/1"))
    tok = train_tokenizer((d.text for d in docs), vocab_size=VOCAB, show_progress=False)
    save_tokenizer(tok, root / "tok")
    write_documents(root / "docs" / "a.jsonl", docs[::2])
    write_documents(root / "docs" / "b.jsonl", docs[1::2])
    pack([str(root / "docs")], root / "tok", root / "packed", val_fraction=0.1, progress=False)
    return root / "packed"


def tiny_config(output: Path, data: Path, *extra: str) -> TrainConfig:
    """A run of a small tnl-tiny that takes a second or two; `extra` are key=value overrides."""
    base = [
        f"output={output}", f"data.path={data}", "data.seq_len=64", "data.batch_size=4", "data.mode=windows",
        "model.name=tnl-tiny", "model.overrides={decoder_layers: 2, linear_use_lrpe_list: [1, 0]}", "optimizer.lr=3e-3",
        "schedule.warmup_steps=2", "train.steps=6", "eval.every=0", "eval.batches=2", "checkpoint.every=3",
        "log.progress=false", "log.tensorboard=false", "log.plot=false",
    ]  # fmt: skip
    return load_train_config(None, [*base, *extra])


def cli_env() -> dict[str, str]:
    """Environment of a `tnlm` subprocess: this tree's sources, one thread (bitwise repeatable)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    env.pop("TNLM_LIGHTNING_BACKEND", None)
    return env


def tnlm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tnlm", *args]

