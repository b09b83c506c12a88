"""Documents -> scoring requests, with k-shot examples, exactly as lm-evaluation-harness builds them.

prompt = description + k x (example question + target delimiter + example answer + few-shot
delimiter) + question. A multiple-choice item asks for log P(target delimiter + choice | prompt) of
each choice; a multiple-input task (WinoGrande) instead has one prompt per choice and one shared
continuation. Few-shot examples come from a separate split: the first k (MMLU-style) or k drawn by
one `random.Random(seed)` that advances document by document in order (the harness's sampler, whose
default seed is 1234), so prompts are deterministic and match the harness's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from tnlm.evaluation.tasks.base import InvalidItem, Task, TaskDataError

FEWSHOT_SEED = 1234  # lm-evaluation-harness's default fewshot_random_seed


@dataclass(frozen=True)
class MCItem:
    """One multiple-choice question, ready to score."""

    doc_id: int
    requests: tuple[tuple[str, str], ...]  # (context, continuation), one per choice
    choice_lengths: tuple[int, ...]  # characters of each choice (acc_norm's denominator)
    gold: int


@dataclass(frozen=True)
class SkippedItem:
    """A document that was not scored, and why (it is reported with the results)."""

    doc_id: int
    reason: str


def gold_index(task: Task, doc: dict, choices: list[str]) -> int:
    """The correct choice's index; raises InvalidItem when it is not among the choices."""
    target = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    if isinstance(target, str):
        if target not in choices:
            raise InvalidItem(f"the answer {target!r} is not among the choices {choices}")
        return choices.index(target)
    if not 0 <= int(target) < len(choices):
        raise InvalidItem(f"answer index {target} is outside the {len(choices)} choices")
    return int(target)


def example_text(task: Task, doc: dict) -> str:
    """A solved example: question, target delimiter, answer, few-shot delimiter."""
    choices = task.doc_to_choice(doc)
    gold = gold_index(task, doc, choices)
    if task.multiple_input:
        question, answer = choices[gold], task.doc_to_target(doc)
    else:
        target = task.doc_to_target(doc)
        question, answer = task.doc_to_text(doc), choices[gold] if isinstance(target, int) else target
    return question + task.target_delimiter + answer + task.fewshot_delimiter


def valid_docs(task: Task, docs: list[dict]) -> list[dict]:
    """The documents that can serve as solved examples."""
    out = []
    for doc in docs:
        try:
            example_text(task, doc)
        except InvalidItem:
            continue
        out.append(doc)
    return out


class FewShotSampler:
    """k examples per document, from a pool of solved documents of another split."""

    def __init__(self, task: Task, pool: list[dict], *, k: int, seed: int = FEWSHOT_SEED) -> None:
        if k < 0:
            raise TaskDataError(f"num_fewshot must be >= 0, got {k}")
        if k > len(pool):
            raise TaskDataError(f"task {task.name}: {k} few-shot examples asked, the {task.fewshot_split} split has {len(pool)}")
        self.task, self.pool, self.k = task, pool, k
        self.rnd = random.Random(seed)

    def examples(self) -> list[dict]:
        if self.k == 0:
            return []
        if self.task.fewshot_sampler == "first_n":
            return self.pool[: self.k]
        return self.rnd.sample(self.pool, self.k)


def build_item(task: Task, doc: dict, doc_id: int, fewshot: list[dict]) -> MCItem:
    """Raises InvalidItem for a document that cannot be scored."""
    prefix = task.description + "".join(example_text(task, ex) for ex in fewshot)
    choices = task.doc_to_choice(doc)
    gold = gold_index(task, doc, choices)
    if task.multiple_input:
        continuation = task.target_delimiter + task.doc_to_target(doc)
        requests = tuple((prefix + c, continuation) for c in choices)
    else:
        context = prefix + task.doc_to_text(doc)
        requests = tuple((context, task.target_delimiter + c) for c in choices)
    return MCItem(doc_id=doc_id, requests=requests, choice_lengths=tuple(len(c) for c in choices), gold=gold)


def build_items(
    task: Task, docs: list[dict], *, fewshot_docs: list[dict] | None = None, num_fewshot: int = 0, seed: int = FEWSHOT_SEED
) -> tuple[list[MCItem], list[SkippedItem]]:
    """Items for every document (in order) and the documents skipped, with their reason."""
    if num_fewshot and fewshot_docs is None:
        raise TaskDataError(f"task {task.name}: {num_fewshot}-shot needs the {task.fewshot_split} split")
    sampler = FewShotSampler(task, valid_docs(task, fewshot_docs or []), k=num_fewshot, seed=seed)
    items, skipped = [], []
    for i, doc in enumerate(docs):
        try:
            gold_index(task, doc, task.doc_to_choice(doc))
        except (InvalidItem, KeyError) as e:
            skipped.append(SkippedItem(i, str(e) if isinstance(e, InvalidItem) else f"missing field {e}"))
            continue
        # drawn for every scored document in order, as the harness draws them (it never sees skipped ones)
        items.append(build_item(task, doc, i, sampler.examples()))
    return items, skipped
