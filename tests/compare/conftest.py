"""Fixtures for the comparison tests: token shards of Python's help topics (present on every machine),
made by the project's own tokenizer trainer and packer, and a tiny comparison configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tnlm.data.files import write_documents
from tnlm.data.pack import pack
from tnlm.data.sources import BuiltinSource
from tnlm.data.tokenizer import save_tokenizer, train_tokenizer

VOCAB = 512
TNL = {"decoder_embed_dim": 32, "hidden_dim": 32, "decoder_attention_heads": 2, "glu_dim": 64, "decoder_layers": 2,
       "linear_use_lrpe_list": [1, 0]}  # fmt: skip
TRANSFORMER = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 2,
               "max_position_embeddings": 64}  # fmt: skip


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread, several times faster than two on a busy machine."""
    yield


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    """Packed shards (train + val) of the help topics, with their tokenizer; returns the shard folder."""
    root = tmp_path_factory.mktemp("corpus")
    docs = list(BuiltinSource(kind="docs", max_files=0).read("0/1"))
    save_tokenizer(train_tokenizer((d.text for d in docs), vocab_size=VOCAB, show_progress=False), root / "tok")
    write_documents(root / "docs" / "a.jsonl", docs)
    pack([str(root / "docs")], root / "tok", root / "packed", val_fraction=0.1, progress=False)
    return root / "packed"


def tiny_compare(output: Path, data: Path, *, models: list[dict] | None = None, **sections: Any) -> dict[str, Any]:
    """A comparison of two tiny models (a few seconds), as the mapping a YAML file would hold."""
    raw: dict[str, Any] = {
        "output": str(output),
        "training": {
            "seed": 0, "data": {"path": str(data), "seq_len": 32, "batch_size": 2},
            "optimizer": {"lr": 3e-3}, "schedule": {"warmup_steps": 2}, "train": {"steps": 4},
            "eval": {"every": 2, "batches": 2}, "checkpoint": {"every": 2, "keep": 1},
            "log": {"progress": False, "tensorboard": "false", "plot": False},
        },
        "models": models or [{"name": "tnl", "model": "tnl-tiny", "overrides": TNL},
                             {"name": "transformer", "model": "transformer-tiny", "overrides": TRANSFORMER}],
        "speed": {"train_lengths": [], "decode_contexts": []},
    }  # fmt: skip
    raw.update(sections)
    return raw
