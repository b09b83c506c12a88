"""What a multiple-choice task is: where its files are, how a document becomes a prompt.

A task reads the benchmark's original release files from a local folder and turns each line into a
document with the field names of the Hugging Face dataset that lm-evaluation-harness reads; its
prompt functions restate the harness's task definition (doc_to_text, doc_to_choice, doc_to_target,
target and few-shot delimiters, description, few-shot sampler) on those documents, so tnlm's prompts
are the harness's prompts (tests compare them with the harness's own task objects).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tnlm.errors import TnlmError


class TaskDataError(TnlmError, ValueError):
    """A task's files are missing, unreadable or inconsistent."""


class InvalidItem(Exception):
    """A document that cannot be scored (its answer is not among its choices); it is reported."""


Reader = Callable[[list[Path]], list[dict]]


@dataclass(frozen=True)
class Split:
    """The files of one split, relative to the task folder (found anywhere below it): the data
    file first, then side files such as a labels file."""

    files: tuple[str, ...]


@dataclass(frozen=True)
class Task:
    name: str  # the harness's task name
    folder: str  # sub-folder of the data directory
    splits: dict[str, Split]  # split name (the harness's) -> files
    eval_splits: tuple[str, ...]  # the harness's evaluation split first, then fallbacks
    fewshot_split: str
    read: Reader
    doc_to_text: Callable[[dict], str | int]
    doc_to_choice: Callable[[dict], list[str]]
    doc_to_target: Callable[[dict], int | str]
    harness_yaml: str  # the harness's own definition, relative to lm_eval/tasks
    source: str  # where the original files come from (shown when they are missing)
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    multiple_input: bool = False  # one context per choice, one shared continuation (WinoGrande)
    fewshot_sampler: str = "random"  # "random" (seeded) or "first_n" (MMLU-style)
    metrics: tuple[str, ...] = ("acc", "acc_norm")
    paper_metric: str = "acc"  # the metric TransNormerLLM's paper reports for this task
    harness_overrides: dict = field(default_factory=dict)  # extra YAML keys (e.g. task name, description)

    def split_files(self, data_dir: Path, split: str) -> list[Path] | None:
        """The split's files under data_dir/folder, or None when any is missing."""
        root = data_dir / self.folder
        found = []
        for name in self.splits[split].files:
            path = find_file(root, name)
            if path is None:
                return None
            found.append(path)
        return found

    def expected_files(self) -> str:
        return ", ".join(f"{s}: {' + '.join(sp.files)}" for s, sp in self.splits.items())

    def missing_error(self, data_dir: Path, what: str) -> TaskDataError:
        root = data_dir / self.folder
        where = f"{root} does not exist" if not root.is_dir() else f"{root} lacks them"
        return TaskDataError(
            f"task {self.name}: {what}. Expected files under {root} ({self.expected_files()}); {where}. "
            f"Get the original files from {self.source} and put them there, or give the folder that holds them as the data directory."
        )

    def eval_split(self, data_dir: Path) -> str:
        """The first evaluation split whose files are present."""
        for split in self.eval_splits:
            if self.split_files(data_dir, split) is not None:
                return split
        raise self.missing_error(data_dir, f"no evaluation split ({' or '.join(self.eval_splits)}) found")

    def load(self, data_dir: Path, split: str) -> list[dict]:
        files = self.split_files(data_dir, split)
        if files is None:
            raise self.missing_error(data_dir, f"the {split} split is missing")
        docs = self.read(files)
        if not docs:
            raise TaskDataError(f"task {self.name}: {files[0]} holds no documents")
        return docs


def find_file(root: Path, name: str) -> Path | None:
    """root/name, root/basename, or the first file below root whose path ends with `name` (release
    archives nest their files)."""
    if not root.is_dir():
        return None
    for direct in (root / name, root / Path(name).name):
        if direct.is_file():
            return direct
    matches = sorted(p for p in root.rglob(Path(name).name) if p.is_file() and p.as_posix().endswith(name))
    return matches[0] if matches else None


def read_jsonl(path: Path) -> list[dict]:
    docs = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{path}, line {n}: not valid JSON ({e}); is this the original release file?") from None
            if not isinstance(doc, dict):
                raise TaskDataError(f"{path}, line {n}: expected a JSON object, got {type(doc).__name__}")
            docs.append(doc)
    return docs


def read_labels(path: Path, count: int) -> list[str]:
    """A labels file: one label per line, aligned with the data file's lines."""
    labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(labels) != count:
        raise TaskDataError(
            f"{path} has {len(labels)} labels but its data file has {count} documents; the two files must match line by line"
        )
    return labels


def require(doc: dict, keys: tuple[str, ...], path: Path, n: int) -> None:
    missing = [k for k in keys if k not in doc]
    if missing:
        raise TaskDataError(f"{path}, document {n}: missing field(s) {', '.join(missing)}; is this the original release file?")
