"""MMLU, CMMLU and C-Eval: four-choice questions in one CSV file per subject and split.

The released layouts differ only in details this reader absorbs:
- MMLU (data.tar): {dev,val,test}/SUBJECT_SPLIT.csv, no header: question, A, B, C, D, answer letter.
- CMMLU: {dev,test}/SUBJECT.csv with a header (",Question,A,B,C,D,Answer").
- C-Eval: {dev,val,test}/SUBJECT_SPLIT.csv with a header ("id,question,A,B,C,D,answer,explanation").
Each subject is one task (mmlu_anatomy, cmmlu_anatomy, ceval-valid_accountant, as the harness
names them); the benchmark name runs every subject found. Few-shot examples are the first k of the dev
split, and the description names the subject, as in the harness.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from tnlm.evaluation.tasks.base import InvalidItem, Split, Task, TaskDataError
from tnlm.evaluation.tasks.subjects import CEVAL_SUBJECTS, CMMLU_SUBJECTS

LETTERS = ("A", "B", "C", "D")


def read_mmlu_csv(path: Path) -> list[dict]:
    """Rows as {question, A, B, C, D, answer}; the header row, when there is one, names the columns."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = [r for r in csv.reader(f) if any(cell.strip() for cell in r)]
    if not rows:
        return []
    head = [c.strip().lower() for c in rows[0]]
    if "question" in head and all(x.lower() in head for x in LETTERS):
        cols = {k: head.index(k) for k in ("question", "a", "b", "c", "d")}
        cols["answer"] = head.index("answer") if "answer" in head else -1
        body = rows[1:]
    else:
        cols = {"question": 0, "a": 1, "b": 2, "c": 3, "d": 4, "answer": 5}
        body = rows
    docs = []
    for n, row in enumerate(body):
        if len(row) <= max(cols.values()):
            raise TaskDataError(f"{path}, row {n + 1}: {len(row)} columns; expected question, A, B, C, D, answer")
        doc = {"question": row[cols["question"]], **{x: row[cols[x.lower()]] for x in LETTERS}}
        doc["answer"] = row[cols["answer"]].strip() if cols["answer"] >= 0 else ""
        docs.append(doc)
    return docs


def _letter_index(letter: str) -> int:
    if letter not in LETTERS:
        raise InvalidItem(f"answer {letter!r} is not one of A, B, C, D")
    return LETTERS.index(letter)


def _choices_block(question: str, doc: dict) -> str:
    return f"{question.strip()}\nA. {doc['A']}\nB. {doc['B']}\nC. {doc['C']}\nD. {doc['D']}\n"


@dataclass(frozen=True)
class Benchmark:
    """One MMLU-style benchmark: its folder, split names, file naming and prompt wording."""

    name: str  # the group name (mmlu, cmmlu, ceval-valid)
    task_prefix: str  # mmlu_, cmmlu_, ceval-valid_
    eval_split: str  # test / val
    suffixed: bool  # SUBJECT_SPLIT.csv (True) or SUBJECT.csv (False)
    harness_yaml: str
    source: str

    def file(self, subject: str, split: str) -> str:
        return f"{split}/{subject}_{split}.csv" if self.suffixed else f"{split}/{subject}.csv"

    def subjects(self, data_dir: Path) -> list[str]:
        root = data_dir / self.name.split("-")[0]
        suffix = f"_{self.eval_split}" if self.suffixed else ""
        found = {p.stem[: len(p.stem) - len(suffix)] for p in root.rglob("*.csv")
                 if p.parent.name == self.eval_split and p.stem.endswith(suffix)}  # fmt: skip
        return sorted(found)

    def description(self, subject: str) -> str:
        if self.name == "mmlu":
            return f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        if self.name == "cmmlu":
            return f"以下是关于{CMMLU_SUBJECTS.get(subject, subject)}的单项选择题，请直接给出正确答案的选项。\n\n"
        return f"以下是中国关于{CEVAL_SUBJECTS.get(subject, subject)}的单项选择题，请选出其中的正确答案。\n\n"

    def to_doc(self, row: dict, subject: str) -> dict:
        """A CSV row in the field names of this benchmark's Hugging Face copy."""
        if self.name == "mmlu":
            answer = LETTERS.index(row["answer"]) if row["answer"] in LETTERS else row["answer"]
            return {"question": row["question"], "subject": subject, "choices": [row[x] for x in LETTERS], "answer": answer}
        if self.name == "cmmlu":
            return {"Question": row["question"], **{x: row[x] for x in LETTERS}, "Answer": row["answer"]}
        return {"question": row["question"], **{x: row[x] for x in LETTERS}, "answer": row["answer"]}

    def task(self, subject: str) -> Task:
        key = "Question" if self.name == "cmmlu" else "question"
        answer_key = {"mmlu": "answer", "cmmlu": "Answer"}.get(self.name, "answer")
        tail = "Answer:" if self.name == "mmlu" else "答案："

        def text(doc: dict) -> str:
            row = doc if self.name != "mmlu" else dict(zip(LETTERS, doc["choices"]))
            return _choices_block(doc[key], row) + tail

        def target(doc: dict) -> int:
            value = doc[answer_key]
            if isinstance(value, int):
                if value not in range(4):
                    raise InvalidItem(f"answer {value!r} is not one of 0..3")
                return value
            return _letter_index(str(value))

        def read(files: list[Path]) -> list[dict]:
            return [self.to_doc(row, subject) for row in read_mmlu_csv(files[0])]

        name = f"{self.task_prefix}{subject}"
        return Task(
            name=name, folder=self.name.split("-")[0],
            splits={s: Split((self.file(subject, s),)) for s in ("dev", self.eval_split)},
            eval_splits=(self.eval_split,), fewshot_split="dev", read=read,
            doc_to_text=text, doc_to_choice=lambda d: list(LETTERS), doc_to_target=target,
            description=self.description(subject), fewshot_sampler="first_n",
            metrics=("acc",) if self.name == "mmlu" else ("acc", "acc_norm"),
            harness_yaml=self.harness_yaml, source=self.source,
            harness_overrides={"task": name, "description": self.description(subject)},
        )  # fmt: skip


MMLU = Benchmark("mmlu", "mmlu_", "test", True, "mmlu/default/_default_template_yaml",
                 "https://github.com/hendrycks/test (data.tar: data/{dev,test}/SUBJECT_{dev,test}.csv)")
CMMLU = Benchmark("cmmlu", "cmmlu_", "test", False, "cmmlu/_default_template_yaml",
                  "https://github.com/haonan-li/CMMLU (data/{dev,test}/SUBJECT.csv)")
CEVAL = Benchmark("ceval-valid", "ceval-valid_", "val", True, "ceval/_default_ceval_yaml",
                  "https://github.com/hkust-nlp/ceval (ceval-exam.zip: {dev,val}/SUBJECT_{dev,val}.csv)")
BENCHMARKS = {b.name: b for b in (MMLU, CMMLU, CEVAL)}
