"""Local task YAMLs, so lm-evaluation-harness runs tnlm's tasks from local files, offline.

For each task, the original release files are converted to JSON Lines in the field names of the
Hugging Face dataset the harness's task expects (tnlm's task readers already produce them), and a
YAML is written that includes the harness's own task definition (prompt, choices, target, metrics,
few-shot settings, helper functions) and only points its dataset at those files:

    include: <lm_eval>/tasks/piqa/piqa.yaml
    dataset_path: json
    dataset_kwargs: {data_files: {validation: /abs/piqa/validation.jsonl, train: ...}}

The prompts are therefore the harness's own, by construction. Data files are absolute paths (the
harness resolves relative ones against the working directory). Documents whose answer is not among
their choices are left out, as `tnlm eval` leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import lm_eval
import yaml

from tnlm.evaluation.prompts import gold_index
from tnlm.evaluation.tasks import ALIASES, BENCHMARKS, InvalidItem, Task, TaskDataError, resolve_task

HARNESS_TASKS = Path(lm_eval.__file__).parent / "tasks"


def harness_definition(task: Task) -> Path:
    path = HARNESS_TASKS / task.harness_yaml
    if not path.is_file():
        raise TaskDataError(
            f"lm-evaluation-harness {getattr(lm_eval, '__version__', '?')} has no {task.harness_yaml}; "
            "tnlm's local tasks were written against lm-eval 0.4.x (pip install 'tnlm[eval]')"
        )
    return path


def _valid(task: Task, docs: list[dict]) -> list[dict]:
    out = []
    for doc in docs:
        try:
            gold_index(task, doc, task.doc_to_choice(doc))
        except (InvalidItem, KeyError):
            continue
        out.append(doc)
    return out


def _write_jsonl(docs: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    tmp.replace(path)


def task_config(task: Task, data_files: dict[str, str], eval_split: str) -> dict:
    """The YAML of one task: the harness's definition, with this dataset and these splits."""
    has_fewshot = task.fewshot_split in data_files
    return {
        "include": str(harness_definition(task)),
        **task.harness_overrides,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
        "training_split": "train" if "train" in data_files else None,
        "validation_split": eval_split if eval_split in ("validation", "val") else None,
        "test_split": eval_split if eval_split == "test" else None,
        "fewshot_split": task.fewshot_split if has_fewshot else None,
    }


def write_task(task: Task, data_dir: Path, out_dir: Path) -> Path:
    """Convert one task's files and write its YAML; returns the YAML's path."""
    eval_split = task.eval_split(data_dir)
    data_files = {}
    for split in dict.fromkeys([eval_split, task.fewshot_split]):
        if task.split_files(data_dir, split) is None:
            continue
        path = (out_dir / "data" / task.name / f"{split}.jsonl").resolve()
        _write_jsonl(_valid(task, task.load(data_dir, split)), path)
        data_files[split] = str(path)
    config = task_config(task, data_files, eval_split)
    yaml_path = out_dir / f"{task.name}.yaml"
    yaml_path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return yaml_path


def write_group(name: str, tasks: list[Task], out_dir: Path) -> Path:
    """A benchmark of many subjects: the harness group, averaged over all items (weighted by size)."""
    metrics = [{"metric": m, "weight_by_size": True} for m in tasks[0].metrics]
    config = {"group": name, "task": [t.name for t in tasks], "aggregate_metric_list": metrics,
              "metadata": {"version": 1}}  # fmt: skip
    path = out_dir / f"_{name}_group.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def write_harness_tasks(data_dir: str | Path, out_dir: str | Path, names: list[str]) -> list[str]:
    """Write the local tasks `names` (tnlm task names; benchmarks expand to their subjects) under
    out_dir; pass out_dir as the harness's include_path. Returns the harness task or group names."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        tasks = resolve_task(name, data_dir)
        for task in tasks:
            write_task(task, data_dir, out_dir)
        group = ALIASES.get(name, name)
        if group in BENCHMARKS:  # every subject found, as one harness group
            write_group(group, tasks, out_dir)
            written.append(group)
        else:
            written.append(tasks[0].name)
    return written


__all__ = ["HARNESS_TASKS", "harness_definition", "task_config", "write_harness_tasks", "write_task"]
