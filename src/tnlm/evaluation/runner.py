"""One evaluation run: multiple-choice tasks, perplexity and passkey retrieval -> an EvalReport.

Every task name and file is checked before the first model call, so a typo or a missing folder fails
at once with a message that names what was expected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tnlm.errors import ConfigError
from tnlm.evaluation.model import EvalModel
from tnlm.evaluation.multiple_choice import combine, evaluate_task
from tnlm.evaluation.passkey import passkey_retrieval
from tnlm.evaluation.perplexity import perplexity, resolve_mode
from tnlm.evaluation.prompts import FEWSHOT_SEED
from tnlm.evaluation.results import EvalReport
from tnlm.evaluation.sources import read_documents
from tnlm.evaluation.tasks import Task, known_task_names, resolve_tasks

SPECIAL_TASKS = ("perplexity", "passkey")


@dataclass(frozen=True)
class PerplexityOptions:
    source: str | None = None  # text / .jsonl file, packed-shard folder, dataset folder or hf:NAME
    text_key: str = "text"
    split: str = "val"
    separator: str | None = None
    mode: str = "auto"
    window: int | None = None
    stride: int | None = None
    chunk_size: int = 512


@dataclass(frozen=True)
class PasskeyOptions:
    lengths: tuple[int, ...] = (256, 512, 1024, 2048)
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    trials: int = 5
    training_length: int | None = None
    chunk_size: int = 2048
    reference_decoding: bool = False  # the general forward pass instead of the fast decode step


@dataclass(frozen=True)
class EvalOptions:
    tasks: tuple[str, ...]
    data_dir: str = "data/eval"
    num_fewshot: int = 0
    limit: int | float | None = None
    batch_size: int = 16
    reuse_context: bool = True
    seed: int = FEWSHOT_SEED
    perplexity: PerplexityOptions = field(default_factory=PerplexityOptions)
    passkey: PasskeyOptions = field(default_factory=PasskeyOptions)


def _check_files(groups: dict[str, list[Task]], data_dir: Path, num_fewshot: int) -> None:
    for tasks in groups.values():
        for task in tasks:
            task.eval_split(data_dir)  # raises with the expected files when absent
            if num_fewshot and task.split_files(data_dir, task.fewshot_split) is None:
                raise task.missing_error(data_dir, f"{num_fewshot}-shot prompts need the {task.fewshot_split} split")


def plan(options: EvalOptions, model: EvalModel | None = None) -> dict[str, list[Task]]:
    """The multiple-choice tasks to run, checked against the data directory."""
    names = [n.strip() for n in options.tasks if n.strip()]
    if not names:
        raise ConfigError(f"no task given; known tasks: {', '.join([*known_task_names(), *SPECIAL_TASKS])}")
    if options.num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be >= 0, got {options.num_fewshot}")
    if options.limit is not None and options.limit <= 0:
        raise ConfigError(f"--limit must be > 0 (a count, or a fraction below 1), got {options.limit}")
    if options.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {options.batch_size}")
    if "passkey" in names and (options.passkey.trials < 1 or not options.passkey.lengths or not options.passkey.depths):
        raise ConfigError("passkey needs at least one length, one depth and one trial")
    if "perplexity" in names and not options.perplexity.source:
        raise ConfigError("the perplexity task needs text to score: pass --text FILE (text, .jsonl, shards or hf:NAME)")
    if "perplexity" in names and model is not None:
        p = options.perplexity
        resolve_mode(model, mode=p.mode, window=p.window, stride=p.stride)
    mc_names = [n for n in names if n not in SPECIAL_TASKS]
    groups = resolve_tasks(mc_names, Path(options.data_dir)) if mc_names else {}
    _check_files(groups, Path(options.data_dir), options.num_fewshot)
    return groups


def run_evaluation(model: EvalModel, options: EvalOptions, *, progress: bool = True) -> EvalReport:
    groups = plan(options, model)
    report = EvalReport(model=model.name, config={**asdict(options), "model_type": model.model_type})
    for name, tasks in groups.items():
        results = [
            evaluate_task(model, t, data_dir=options.data_dir, num_fewshot=options.num_fewshot, limit=options.limit,
                          batch_size=options.batch_size, reuse_context=options.reuse_context, seed=options.seed,
                          progress=progress)  # fmt: skip
            for t in tasks
        ]
        report.tasks += results if len(results) == 1 else [combine(name, results), *results]
    names = {n.strip() for n in options.tasks}
    if "perplexity" in names:
        p = options.perplexity
        docs = read_documents(p.source, text_key=p.text_key, split=p.split, separator=p.separator)
        limit = int(options.limit) if options.limit and options.limit >= 1 else None
        report.perplexity = perplexity(model, docs, mode=p.mode, window=p.window, stride=p.stride, chunk_size=p.chunk_size,
                                       batch_size=max(1, options.batch_size // 4), limit=limit, progress=progress)  # fmt: skip
    if "passkey" in names:
        k = options.passkey
        report.passkey = passkey_retrieval(model, lengths=list(k.lengths), depths=list(k.depths), trials=k.trials,
                                           seed=options.seed, chunk_size=k.chunk_size,
                                           training_length=k.training_length, progress=progress,
                                           reference_decoding=k.reference_decoding)  # fmt: skip
    return report
