"""Shared pieces of the evaluation tests: tiny task folders in the original release formats, tiny
models of every family, and a bigram model whose probabilities are known exactly."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tests.helpers.models import TINY_PRESETS
from tests.helpers.models import tiny_model as tiny_module
from tnlm.evaluation.model import EvalModel
from tnlm.generation.tokenizer import ByteTokenizer
from tnlm.models import create_model

__all__ = ["TINY_PRESETS", "BigramLM", "bigram_logp", "tiny_model"]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forwards: one thread avoids OpenMP hand-offs on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@functools.lru_cache(maxsize=None)
def tiny_model(name: str, **overrides) -> EvalModel:
    """A tiny preset (shared with the other tests unless overridden) with the byte tokenizer."""
    model = create_model(name, seed=0, overrides=overrides).eval() if overrides else tiny_module(name)
    return EvalModel(model=model, tokenizer=ByteTokenizer(), name=name)


class BigramCache:
    def __init__(self, seen: int) -> None:
        self.seen_tokens = seen

    def get_seq_length(self) -> int:
        return self.seen_tokens


class BigramLM(nn.Module):
    """P(next = t + 1 | t) = 1/2, every other token (1/2) / (V - 1): a model whose log-likelihoods a
    test can write down by hand. Follows the family contract (cache=, use_cache=, logits_to_keep=)."""

    def __init__(self, vocab_size: int = 300) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab_size)
        V = vocab_size
        table = torch.full((V, V), math.log(0.5 / (V - 1)))
        table[torch.arange(V), (torch.arange(V) + 1) % V] = math.log(0.5)
        self.register_buffer("table", table)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=False, logits_to_keep=0):
        logits = self.table[input_ids]  # (B, T, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        seen = (cache.seen_tokens if cache is not None else 0) + input_ids.shape[1]
        return SimpleNamespace(logits=logits, cache=BigramCache(seen) if use_cache else None)


def bigram_logp(prev: int, nxt: int, vocab: int = 300) -> float:
    return math.log(0.5) if nxt == (prev + 1) % vocab else math.log(0.5 / (vocab - 1))


# ---- tiny task folders in the original release formats ----


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _lines(path: Path, values: list) -> None:
    path.write_text("".join(f"{v}\n" for v in values), encoding="utf-8")


def _csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)


def write_piqa(root: Path, n: int = 6) -> None:
    for split, file in (("train", "train"), ("valid", "valid")):
        rows = [{"goal": f"{split} goal {i}", "sol1": f"do thing {i}.", "sol2": f"do other {i}."} for i in range(n)]
        _jsonl(root / "piqa" / f"{file}.jsonl", rows)
        _lines(root / "piqa" / f"{file}-labels.lst", [i % 2 for i in range(n)])


def write_arc(root: Path, n: int = 5) -> None:
    for split in ("Train", "Dev", "Test"):
        rows = []
        for i in range(n):
            labels = ["A", "B", "C", "D"] if i % 2 == 0 else ["1", "2", "3"]
            choices = [{"text": f"{split} answer {i}{lab}", "label": lab} for lab in labels]
            rows.append({"id": f"{split}-{i}", "question": {"stem": f"{split} question {i}?", "choices": choices},
                         "answerKey": labels[i % len(labels)]})  # fmt: skip
        for name in ("ARC-Easy", "ARC-Challenge"):
            _jsonl(root / "arc" / f"{name}-{split}.jsonl", rows)


def write_boolq(root: Path, n: int = 6) -> None:
    for split in ("train", "dev"):
        rows = [{"question": f"is {split} {i} true", "title": "T", "answer": i % 2 == 0, "passage": f"Passage {split} {i}."}
                for i in range(n)]  # fmt: skip
        _jsonl(root / "boolq" / f"{split}.jsonl", rows)


def write_winogrande(root: Path, n: int = 6) -> None:
    for split in ("train_xl", "dev"):
        word = split.split("_")[0]  # no "_" in the sentence but the blank
        rows = [{"qID": f"{split}-{i}", "sentence": f"Ann gave Bo the {word} book {i} because _ was done with it.",
                 "option1": "Ann", "option2": "Bo", "answer": str(1 + i % 2)} for i in range(n)]  # fmt: skip
        _jsonl(root / "winogrande" / f"{split}.jsonl", rows)


def write_copa(root: Path, n: int = 6) -> None:
    for split in ("train", "val"):
        rows = [{"premise": f"The {split} man {i} ran.", "choice1": "He was late.", "choice2": "He Was tired.",
                 "question": "cause" if i % 2 else "effect", "label": i % 2, "idx": i} for i in range(n)]  # fmt: skip
        _jsonl(root / "copa" / f"{split}.jsonl", rows)


def write_openbookqa(root: Path, n: int = 5) -> None:
    for split in ("train", "dev", "test"):
        rows = [{"id": f"{split}-{i}", "question": {"stem": f"{split} stem {i}",
                 "choices": [{"text": f"opt {i}{x}", "label": x} for x in "ABCD"]}, "answerKey": "ABCD"[i % 4]}
                for i in range(n)]  # fmt: skip
        _jsonl(root / "openbookqa" / "Main" / f"{split}.jsonl", rows)


def write_hellaswag(root: Path, n: int = 5) -> None:
    for split in ("train", "val"):
        rows = [{"ind": i, "activity_label": f"Baking {split}", "ctx_a": f"A man [title] mixes flour {i}.",
                 "ctx_b": "then he", "ctx": "", "endings": [f"bakes [step] it {i}.", "eats  it.", "sings.", "runs."],
                 "label": i % 4, "source_id": "x", "split": split, "split_type": "indomain"}
                for i in range(n)]  # fmt: skip
        _jsonl(root / "hellaswag" / f"hellaswag_{split}.jsonl", rows)


def write_siqa(root: Path, n: int = 5) -> None:
    for split in ("train", "dev"):
        rows = [{"context": f"Sam {split} {i} won.", "question": "How does Sam feel?", "answerA": "happy",
                 "answerB": "sad", "answerC": "bored"} for i in range(n)]  # fmt: skip
        _jsonl(root / "siqa" / f"{split}.jsonl", rows)
        _lines(root / "siqa" / f"{split}-labels.lst", [1 + i % 3 for i in range(n)])


def write_mmlu_style(root: Path, n: int = 5) -> None:
    for split in ("dev", "test"):
        _csv(root / "mmlu" / "data" / split / f"high_school_biology_{split}.csv",
             [[f"{split} q{i}?", "a1", "b1", "c1", "d1", "ABCD"[i % 4]] for i in range(n)])
        _csv(root / "cmmlu" / split / "anatomy.csv",
             [["", "Question", "A", "B", "C", "D", "Answer"]] + [[str(i), f"问题{i}", "甲", "乙", "丙", "丁", "ABCD"[i % 4]] for i in range(n)])
    for split in ("dev", "val"):
        _csv(root / "ceval" / split / f"accountant_{split}.csv",
             [["id", "question", "A", "B", "C", "D", "answer", "explanation"]]
             + [[str(i), f"会计{i}", "一", "二", "三", "四", "ABCD"[i % 4], ""] for i in range(n)])  # fmt: skip


WRITERS = {
    "piqa": write_piqa, "arc_easy": write_arc, "arc_challenge": write_arc, "boolq": write_boolq,
    "winogrande": write_winogrande, "copa": write_copa, "openbookqa": write_openbookqa,
    "hellaswag": write_hellaswag, "social_iqa": write_siqa, "mmlu": write_mmlu_style, "cmmlu": write_mmlu_style,
    "ceval-valid": write_mmlu_style,
}  # fmt: skip


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    """Every task in its original format, a few documents per split."""
    root = tmp_path / "eval-data"
    for writer in set(WRITERS.values()):
        writer(root)
    return root
