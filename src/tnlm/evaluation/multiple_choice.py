"""Multiple-choice evaluation: score every choice, then acc and acc_norm with standard errors.

acc: the choice with the highest log-likelihood is the gold one. acc_norm: the same after dividing
each log-likelihood by the choice's length in characters (lm-evaluation-harness's definition; ties
go to the first choice, as numpy's argmax gives). Standard error of a mean: sample standard
deviation (n - 1) / sqrt(n), as the harness computes it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from tnlm.errors import ConfigError
from tnlm.evaluation.model import EvalModel
from tnlm.evaluation.prompts import FEWSHOT_SEED, MCItem, SkippedItem, build_items
from tnlm.evaluation.scorer import TokenRequest, score_tokens
from tnlm.evaluation.tasks import Task


def argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on ties."""
    best = 0
    for i, v in enumerate(values):
        if v > values[best]:
            best = i
    return best


def mean_stderr(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean); stderr is nan for fewer than two values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


@dataclass(frozen=True)
class ItemScore:
    doc_id: int
    loglikelihoods: tuple[float, ...]
    is_greedy: tuple[bool, ...]
    gold: int

    @property
    def pred(self) -> int:
        return argmax(list(self.loglikelihoods))

    def pred_norm(self, choice_lengths: tuple[int, ...]) -> int:
        return argmax([ll / max(n, 1) for ll, n in zip(self.loglikelihoods, choice_lengths)])


@dataclass
class TaskResult:
    task: str
    split: str
    num_fewshot: int
    metrics: dict[str, tuple[float, float]]  # metric -> (value, stderr)
    items: int
    paper_metric: str
    context_reuse: bool
    seconds: float
    skipped: list[SkippedItem] = field(default_factory=list)
    scores: list[ItemScore] = field(default_factory=list)
    per_item: dict[str, list[float]] = field(default_factory=dict)  # metric -> 0/1 per scored item


def score_items(
    model: EvalModel,
    items: list[MCItem],
    *,
    batch_size: int = 16,
    reuse_context: bool = True,
    min_saving: float = 1 / 3,
    progress: tqdm | None = None,
) -> list[ItemScore]:
    """Log-likelihood of every choice of every item; one group per item, so its context runs once."""
    requests, owners = [], []
    for n, item in enumerate(items):
        for context, continuation in item.requests:
            ctx, cont = model.encode_pair(context, continuation)
            requests.append(TokenRequest(ctx, cont, group=n))
            owners.append(n)
    scores = score_tokens(
        model.model, requests, batch_size=batch_size, reuse_context=reuse_context and model.reuses_context,
        max_length=model.max_length, min_saving=min_saving, on_progress=progress.update if progress is not None else None,
    )  # fmt: skip
    per_item: list[list] = [[] for _ in items]
    for owner, s in zip(owners, scores):
        per_item[owner].append(s)
    return [
        ItemScore(item.doc_id, tuple(s.logprob for s in ss), tuple(s.is_greedy for s in ss), item.gold)
        for item, ss in zip(items, per_item)
    ]


def item_metrics(items: list[MCItem], scores: list[ItemScore]) -> dict[str, list[float]]:
    """0/1 per item for acc and acc_norm."""
    return {
        "acc": [float(s.pred == s.gold) for s in scores],
        "acc_norm": [float(s.pred_norm(it.choice_lengths) == s.gold) for it, s in zip(items, scores)],
    }


def apply_limit(docs: list[dict], limit: int | float | None) -> list[dict]:
    """The first `limit` documents; a limit below 1 is a fraction, as in the harness."""
    if limit is None:
        return docs
    if limit <= 0:
        raise ConfigError(f"--limit must be > 0 (a count, or a fraction below 1), got {limit}")
    n = math.ceil(len(docs) * limit) if limit < 1 else int(limit)
    return docs[:n]


def evaluate_task(
    model: EvalModel,
    task: Task,
    *,
    data_dir: str | Path,
    num_fewshot: int = 0,
    limit: int | float | None = None,
    batch_size: int = 16,
    reuse_context: bool = True,
    seed: int = FEWSHOT_SEED,
    progress: bool = True,
) -> TaskResult:
    """Load a task's files, build k-shot prompts, score, and compute its metrics."""
    data_dir = Path(data_dir)
    split = task.eval_split(data_dir)
    docs = apply_limit(task.load(data_dir, split), limit)
    fewshot_docs = task.load(data_dir, task.fewshot_split) if num_fewshot else None
    items, skipped = build_items(task, docs, fewshot_docs=fewshot_docs, num_fewshot=num_fewshot, seed=seed)
    start = time.perf_counter()
    total = sum(len(it.requests) for it in items)
    with tqdm(total=total, desc=task.name, unit="req", disable=not progress, leave=False) as bar:
        scores = score_items(model, items, batch_size=batch_size, reuse_context=reuse_context, progress=bar)
    per_item = item_metrics(items, scores)
    return TaskResult(
        task=task.name, split=split, num_fewshot=num_fewshot,
        metrics={m: mean_stderr(per_item[m]) for m in task.metrics}, items=len(items),
        paper_metric=task.paper_metric, context_reuse=reuse_context and model.reuses_context,
        seconds=time.perf_counter() - start, skipped=skipped, scores=scores,
        per_item={m: per_item[m] for m in task.metrics},
    )  # fmt: skip


def combine(name: str, results: list[TaskResult]) -> TaskResult:
    """A benchmark of many subjects: every metric over all their items together (weighted by size)."""
    metrics = {}
    for m in results[0].metrics:
        values = [v for r in results for v in r.per_item.get(m, [])]
        metrics[m] = mean_stderr(values)
    return TaskResult(
        task=name, split=results[0].split, num_fewshot=results[0].num_fewshot, metrics=metrics,
        items=sum(r.items for r in results), paper_metric=results[0].paper_metric,
        context_reuse=results[0].context_reuse, seconds=sum(r.seconds for r in results),
        skipped=[s for r in results for s in r.skipped],
    )  # fmt: skip
