"""The multiple-choice tasks tnlm reads from local files, by the harness's task names.

`resolve_tasks(["piqa", "mmlu"], data_dir)` -> {requested name: [Task, ...]}: a benchmark of many
subjects (mmlu, cmmlu, ceval-valid) expands to one task per subject found under data_dir.
"""

from __future__ import annotations

from pathlib import Path

from tnlm.evaluation.tasks.base import InvalidItem, Split, Task, TaskDataError, find_file
from tnlm.evaluation.tasks.commonsense import BOOLQ, COPA, HELLASWAG, PIQA, SIQA, WINOGRANDE
from tnlm.evaluation.tasks.mmlu import BENCHMARKS, Benchmark
from tnlm.evaluation.tasks.science import ARC_CHALLENGE, ARC_EASY, OPENBOOKQA

TASKS: dict[str, Task] = {
    t.name: t for t in (PIQA, ARC_EASY, ARC_CHALLENGE, BOOLQ, WINOGRANDE, COPA, OPENBOOKQA, HELLASWAG, SIQA)
}
ALIASES = {"siqa": "social_iqa", "obqa": "openbookqa", "ceval": "ceval-valid", "arc_e": "arc_easy", "arc_c": "arc_challenge"}


def known_task_names() -> list[str]:
    return sorted([*TASKS, *BENCHMARKS]) + [f"{b.task_prefix}SUBJECT" for b in BENCHMARKS.values()]


def _unknown(name: str) -> TaskDataError:
    return TaskDataError(
        f"unknown task {name!r}; known tasks: {', '.join(known_task_names())} "
        f"(aliases: {', '.join(f'{a}={t}' for a, t in ALIASES.items())})"
    )


def _benchmark_tasks(bench: Benchmark, data_dir: Path, subject: str | None) -> list[Task]:
    if subject is not None:
        return [bench.task(subject)]
    subjects = bench.subjects(data_dir)
    if not subjects:
        root = data_dir / bench.name.split("-")[0]
        raise TaskDataError(
            f"task {bench.name}: no subject files under {root} (expected "
            f"{bench.file('SUBJECT', bench.eval_split)} and {bench.file('SUBJECT', 'dev')} per subject). "
            f"Get them from {bench.source}, or give the folder that holds them as the data directory."
        )
    return [bench.task(s) for s in subjects]


def resolve_task(name: str, data_dir: Path) -> list[Task]:
    """The task(s) a name stands for."""
    name = ALIASES.get(name, name)
    if name in TASKS:
        return [TASKS[name]]
    if name in BENCHMARKS:
        return _benchmark_tasks(BENCHMARKS[name], data_dir, None)
    for bench in BENCHMARKS.values():
        if name.startswith(bench.task_prefix) and len(name) > len(bench.task_prefix):
            return _benchmark_tasks(bench, data_dir, name[len(bench.task_prefix) :])
    raise _unknown(name)


def resolve_tasks(names: list[str], data_dir: Path) -> dict[str, list[Task]]:
    """Every name checked before anything loads, so a typo fails at once."""
    if not names:
        raise TaskDataError(f"no task given; known tasks: {', '.join(known_task_names())}")
    return {n: resolve_task(n, data_dir) for n in names}


__all__ = [
    "ALIASES", "BENCHMARKS", "TASKS", "InvalidItem", "Split", "Task", "TaskDataError", "find_file",
    "known_task_names", "resolve_task", "resolve_tasks",
]  # fmt: skip
