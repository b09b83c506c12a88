"""ARC-Easy, ARC-Challenge and OpenBookQA: AI2's release format
{id, question: {stem, choices: [{text, label}]}, answerKey} -> the harness's documents."""

from __future__ import annotations

from pathlib import Path

from tnlm.evaluation.tasks.base import InvalidItem, Split, Task, TaskDataError, read_jsonl, require


def _choices(doc: dict, path: Path, n: int) -> dict:
    choices = doc["question"].get("choices") if isinstance(doc["question"], dict) else None
    if not isinstance(choices, list) or not all(isinstance(c, dict) and "text" in c and "label" in c for c in choices):
        raise TaskDataError(f"{path}, document {n}: question.choices must be a list of {{text, label}}")
    return {"text": [c["text"] for c in choices], "label": [c["label"] for c in choices]}


def read_ai2(files: list[Path], *, stem_key: str) -> list[dict]:
    """AI2 lines -> {id, <stem_key>, choices: {text, label}, answerKey}."""
    out = []
    for n, doc in enumerate(read_jsonl(files[0])):
        require(doc, ("question", "answerKey"), files[0], n)
        choices = _choices(doc, files[0], n)
        out.append({"id": doc.get("id", str(n)), stem_key: doc["question"].get("stem", ""), "choices": choices,
                    "answerKey": doc["answerKey"]})  # fmt: skip
    return out


def answer_index(doc: dict) -> int:
    key = str(doc["answerKey"]).lstrip()
    labels = doc["choices"]["label"]
    if key not in labels:
        raise InvalidItem(f"answerKey {doc['answerKey']!r} is not among the choice labels {labels}")
    return labels.index(key)


def _arc(name: str, split_prefix: str, paper_metric: str) -> Task:
    return Task(
        name=name, folder="arc",
        splits={s: Split((f"{split_prefix}-{f}.jsonl",)) for s, f in (("train", "Train"), ("validation", "Dev"), ("test", "Test"))},
        eval_splits=("test", "validation"), fewshot_split="train",
        read=lambda files: read_ai2(files, stem_key="question"),
        doc_to_text=lambda d: f"Question: {d['question']}\nAnswer:",
        doc_to_choice=lambda d: list(d["choices"]["text"]),
        doc_to_target=answer_index, paper_metric=paper_metric,
        harness_yaml="arc/arc_easy.yaml" if name == "arc_easy" else "arc/arc_challenge.yaml",
        source=f"https://allenai.org/data/arc (ARC-V1-Feb2018: {split_prefix}-{{Train,Dev,Test}}.jsonl)",
    )  # fmt: skip


ARC_EASY = _arc("arc_easy", "ARC-Easy", "acc")
ARC_CHALLENGE = _arc("arc_challenge", "ARC-Challenge", "acc_norm")

OPENBOOKQA = Task(
    name="openbookqa", folder="openbookqa",
    splits={s: Split((f"Main/{f}.jsonl",)) for s, f in (("train", "train"), ("validation", "dev"), ("test", "test"))},
    eval_splits=("test", "validation"), fewshot_split="train",
    read=lambda files: read_ai2(files, stem_key="question_stem"),
    doc_to_text=lambda d: d["question_stem"],
    doc_to_choice=lambda d: list(d["choices"]["text"]),
    doc_to_target=answer_index, paper_metric="acc_norm", harness_yaml="openbookqa/openbookqa.yaml",
    source="https://allenai.org/data/open-book-qa (OpenBookQA-V1-Sep2018/Data/Main/{train,dev,test}.jsonl)",
)  # fmt: skip
