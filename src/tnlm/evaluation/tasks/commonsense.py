"""PIQA, SIQA, HellaSwag, WinoGrande, COPA and BoolQ: original release files -> harness documents."""

from __future__ import annotations

import re
from pathlib import Path

from tnlm.evaluation.tasks.base import InvalidItem, Split, Task, read_jsonl, read_labels, require


def _int_label(value: object, allowed: range, what: str) -> int:
    try:
        label = int(str(value).strip())
    except ValueError:
        raise InvalidItem(f"{what} {value!r} is not a number") from None
    if label not in allowed:
        raise InvalidItem(f"{what} {value!r} is not among the choices ({allowed.start}..{allowed.stop - 1})")
    return label


# PIQA: {goal, sol1, sol2} lines and a labels file of 0/1


def read_piqa(files: list[Path]) -> list[dict]:
    data, labels_file = files
    docs = read_jsonl(data)
    labels = read_labels(labels_file, len(docs))
    for n, (doc, label) in enumerate(zip(docs, labels)):
        require(doc, ("goal", "sol1", "sol2"), data, n)
        doc["label"] = int(label) if label.isdigit() else label  # an integer in the harness's copy
    return docs


PIQA = Task(
    name="piqa", folder="piqa",
    splits={"train": Split(("train.jsonl", "train-labels.lst")), "validation": Split(("valid.jsonl", "valid-labels.lst"))},
    eval_splits=("validation",), fewshot_split="train", read=read_piqa,
    doc_to_text=lambda d: f"Question: {d['goal']}\nAnswer:",
    doc_to_choice=lambda d: [d["sol1"], d["sol2"]],
    doc_to_target=lambda d: _int_label(d["label"], range(2), "label"),
    harness_yaml="piqa/piqa.yaml", source="https://yonatanbisk.com/piqa (train.jsonl, valid.jsonl and their -labels.lst)",
)  # fmt: skip


# Social IQa: {context, question, answerA, answerB, answerC} lines and a labels file of 1/2/3


def read_siqa(files: list[Path]) -> list[dict]:
    data, labels_file = files
    docs = read_jsonl(data)
    labels = read_labels(labels_file, len(docs))
    for n, (doc, label) in enumerate(zip(docs, labels)):
        require(doc, ("context", "question", "answerA", "answerB", "answerC"), data, n)
        doc["label"] = label
    return docs


SIQA = Task(
    name="social_iqa", folder="siqa",
    splits={"train": Split(("train.jsonl", "train-labels.lst")), "validation": Split(("dev.jsonl", "dev-labels.lst"))},
    eval_splits=("validation",), fewshot_split="train", read=read_siqa,
    doc_to_text=lambda d: f"Q: {d['context']} {d['question']}\nA:",
    doc_to_choice=lambda d: [d["answerA"], d["answerB"], d["answerC"]],
    doc_to_target=lambda d: _int_label(d["label"], range(1, 4), "label") - 1,
    metrics=("acc",), harness_yaml="siqa/siqa.yaml",
    source="https://leaderboard.allenai.org/socialiqa (socialiqa-train-dev.zip)",
)  # fmt: skip


# HellaSwag: {activity_label, ctx_a, ctx_b, endings, label, ...}; the harness cleans the WikiHow markup


def hellaswag_clean(text: str) -> str:
    """The harness's preprocessing: strip, ' [title]' -> '. ', drop [bracketed] markup, then one
    pass that turns every double space into one."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc(doc: dict) -> dict:
    """The harness's process_docs: the query and the cleaned endings."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {"query": hellaswag_clean(doc["activity_label"] + ": " + ctx), "choices": [hellaswag_clean(e) for e in doc["endings"]]}


def read_hellaswag(files: list[Path]) -> list[dict]:
    docs = read_jsonl(files[0])
    for n, doc in enumerate(docs):
        require(doc, ("activity_label", "ctx_a", "ctx_b", "endings", "label"), files[0], n)
        doc["label"] = str(doc["label"])  # the HF copy stores it as a string
    return docs


def _hellaswag_target(doc: dict) -> int:
    return _int_label(doc["label"], range(len(doc["endings"])), "label")


HELLASWAG = Task(
    name="hellaswag", folder="hellaswag",
    splits={"train": Split(("hellaswag_train.jsonl",)), "validation": Split(("hellaswag_val.jsonl",))},
    eval_splits=("validation",), fewshot_split="train", read=read_hellaswag,
    doc_to_text=lambda d: hellaswag_doc(d)["query"],
    doc_to_choice=lambda d: hellaswag_doc(d)["choices"],
    doc_to_target=_hellaswag_target, paper_metric="acc_norm",
    harness_yaml="hellaswag/hellaswag.yaml", source="https://github.com/rowanz/hellaswag (data/hellaswag_{train,val}.jsonl)",
)  # fmt: skip


# WinoGrande: {sentence with "_", option1, option2, answer "1"/"2"}; partial scoring


def read_winogrande(files: list[Path]) -> list[dict]:
    data = files[0]
    docs = read_jsonl(data)
    labels_file = data.with_name(data.stem + "-labels.lst")
    if any("answer" not in d for d in docs) and labels_file.is_file():
        for doc, label in zip(docs, read_labels(labels_file, len(docs))):
            doc.setdefault("answer", label)
    for n, doc in enumerate(docs):
        require(doc, ("sentence", "option1", "option2", "answer"), data, n)
    return docs


def _blank(doc: dict) -> int:
    idx = doc["sentence"].find("_")
    if idx < 0:
        raise InvalidItem("the sentence has no '_' blank to fill")
    return idx


def winogrande_gold(doc: dict) -> int:
    """The correct option's index (the harness's doc_to_text: the gold context)."""
    return _int_label(doc["answer"], range(1, 3), "answer") - 1


WINOGRANDE = Task(
    name="winogrande", folder="winogrande",
    splits={"train": Split(("train_xl.jsonl",)), "validation": Split(("dev.jsonl",))},
    eval_splits=("validation",), fewshot_split="train", read=read_winogrande,
    doc_to_text=winogrande_gold,
    doc_to_choice=lambda d: [d["sentence"][: _blank(d)] + opt for opt in (d["option1"], d["option2"])],
    doc_to_target=lambda d: d["sentence"][_blank(d) + 1 :].strip(),
    multiple_input=True, metrics=("acc",), harness_yaml="winogrande/default.yaml",
    source="https://github.com/allenai/winogrande (winogrande_1.1.zip: train_xl.jsonl, dev.jsonl)",
)  # fmt: skip


# COPA (SuperGLUE): {premise, choice1, choice2, question "cause"/"effect", label}


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def copa_text(doc: dict) -> str:
    connector = {"cause": "because", "effect": "therefore"}.get(doc["question"])
    if connector is None:
        raise InvalidItem(f"question {doc['question']!r} is neither 'cause' nor 'effect'")
    return doc["premise"].strip()[:-1] + f" {connector}"


def copa_choices(doc: dict) -> list[str]:
    return [" " + _lower_first(doc["choice1"]), " " + _lower_first(doc["choice2"])]


def read_copa(files: list[Path]) -> list[dict]:
    docs = read_jsonl(files[0])
    for n, doc in enumerate(docs):
        require(doc, ("premise", "choice1", "choice2", "question", "label"), files[0], n)
    return docs


COPA = Task(
    name="copa", folder="copa",
    splits={"train": Split(("train.jsonl",)), "validation": Split(("val.jsonl",))},
    eval_splits=("validation",), fewshot_split="train", read=read_copa,
    doc_to_text=copa_text, doc_to_choice=copa_choices,
    doc_to_target=lambda d: copa_choices(d)[_int_label(d["label"], range(2), "label")],
    metrics=("acc",), harness_yaml="super_glue/copa/default.yaml",
    source="https://super.gluebenchmark.com/tasks (COPA.zip: train.jsonl, val.jsonl)",
)  # fmt: skip


# BoolQ (Google's release): {question, title, answer: true/false, passage}


def read_boolq(files: list[Path]) -> list[dict]:
    docs = read_jsonl(files[0])
    for n, doc in enumerate(docs):
        require(doc, ("question", "passage"), files[0], n)
        answer = doc.get("answer", doc.get("label"))  # SuperGLUE's copy calls it label
        doc["label"] = int(answer) if isinstance(answer, bool) else answer
    return docs


def _boolq_target(doc: dict) -> int:
    if doc["label"] not in (0, 1):
        raise InvalidItem(f"answer {doc['label']!r} is not true or false")
    return doc["label"]


BOOLQ = Task(
    name="boolq", folder="boolq",
    splits={"train": Split(("train.jsonl",)), "validation": Split(("dev.jsonl",))},
    eval_splits=("validation",), fewshot_split="train", read=read_boolq,
    doc_to_text=lambda d: f"{d['passage']}\nQuestion: {d['question']}?\nAnswer:",
    doc_to_choice=lambda d: ["no", "yes"], doc_to_target=_boolq_target,
    metrics=("acc",), harness_yaml="super_glue/boolq/default.yaml",
    source="https://github.com/google-research-datasets/boolean-questions (train.jsonl, dev.jsonl)",
)  # fmt: skip

