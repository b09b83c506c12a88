"""The pipeline: a YAML list of steps run over the shards of a source, in parallel, resumably.

Steps are grouped into stages at each global step (deduplication, perplexity tail): a global step is
fitted once over all documents of the stage before it, and its decisions are saved; then every stage
runs shard by shard in a process pool. Each shard's output is written atomically, followed by its
statistics file, which marks it done: a rerun after a crash skips finished shards and fits, and
produces the same output as a run that was never interrupted."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from tnlm.data.document import Document
from tnlm.fsutil import expand_home
from tnlm.errors import DataError
from tnlm.data.files import read_documents, write_documents, write_json_atomic
from tnlm.data.lock import LOCK_NAME, folder_lock
from tnlm.data.paths import PIPELINE_MARKER
from tnlm.data.registry import build_step
from tnlm.data.report import Report
from tnlm.data.sources import Source, build_source
from tnlm.data.step import GlobalStep, Step, StepStats
from tnlm.interrupt import worker_pool

SUFFIXES = {None: ".jsonl", "none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}


@dataclass
class PipelineConfig:
    """What a pipeline YAML file holds."""

    source: dict[str, Any]
    steps: list[dict[str, Any]]
    output: str
    workers: int = 1
    compression: str | None = None
    keep_work: bool = False  # keep the documents between stages (their statistics are always kept)
    datatrove: dict[str, Any] | None = None  # executor options for --engine datatrove: {slurm: {...}, ray: {...}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        if not isinstance(data, dict):
            raise DataError("a pipeline config is a mapping with source:, steps: and output:")
        missing = [k for k in ("source", "steps", "output") if k not in data]
        if missing:
            raise DataError(f"pipeline config lacks {', '.join(missing)}: see configs/data/*.yaml for examples")
        unknown = set(data) - {"source", "steps", "output", "workers", "compression", "keep_work", "datatrove"}
        if unknown:
            raise DataError(f"unknown pipeline config keys {sorted(unknown)}")
        if data.get("compression") not in SUFFIXES:
            raise DataError("compression must be none, gzip or zstd")
        if not isinstance(data["source"], dict):
            raise DataError("source: must be a mapping such as {type: files, paths: [data/*.jsonl]}")
        if not isinstance(data["steps"], list):
            raise DataError("steps: must be a list of {step: NAME, ...options}")
        workers = data.get("workers", 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise DataError(f"workers: must be a whole number of processes, 1 or more; got {workers!r}")
        return cls(**data)

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineConfig:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"cannot read pipeline config {path}: {err}") from err
        try:
            return cls.from_dict(expand_home(yaml.safe_load(text)))
        except yaml.YAMLError as err:
            raise DataError(f"{path} is not valid YAML: {err}") from err

    def fingerprint(self) -> dict[str, Any]:
        """What must not change between a run and its resumption."""
        return {"source": self.source, "steps": self.steps, "compression": self.compression}


@dataclass
class Stage:
    index: int
    step_indices: list[int]  # into config.steps; the first may be a global step
    folder: Path


class Pipeline:
    """Runs a `PipelineConfig`; `run()` returns the merged `Report`."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.source: Source = build_source(config.source)
        self.steps: list[Step] = [build_step(entry) for entry in config.steps]
        self.output = Path(config.output)
        self.source.check_output(self.output, samples=[f"shard-00000{SUFFIXES[config.compression]}"])
        self.work = self.output / "_work"
        self.shards = self.source.shards()
        if not self.shards:
            raise DataError("the source has no shards (no input files?)")
        self.stages = self._plan()
        self._pool: Pool | None = None  # the run's workers, while it runs with more than one
        self._source_bytes: list[int] | None = None

    def _plan(self) -> list[Stage]:
        groups: list[list[int]] = [[]]
        for i, step in enumerate(self.steps):
            if isinstance(step, GlobalStep) and groups[-1]:
                groups.append([])
            groups[-1].append(i)
        last = len(groups) - 1
        return [Stage(s, g, self.output if s == last else self.work / f"stage{s}") for s, g in enumerate(groups)]

    def shard_path(self, stage: Stage, shard: int) -> Path:
        return stage.folder / f"shard-{shard:05d}{SUFFIXES[self.config.compression]}"

    def stats_path(self, stage: Stage, shard: int) -> Path:
        return stage.folder / "_stats" / f"shard-{shard:05d}.json"

    def fit_path(self, step_index: int) -> Path:
        return self.work / f"fit-{step_index:02d}-{self.steps[step_index].name}.json"

    def run(self, *, workers: int | None = None, progress: bool = True) -> Report:
        """Run (or resume) the pipeline, holding the output folder's lock: a second run into the same
        folder is refused while this one lives."""
        with folder_lock(self.output):
            return self._run(workers=workers, progress=progress)

    def _run(self, *, workers: int | None, progress: bool) -> Report:
        self.check_resumable(engine={"engine": "tnlm"})
        final = self.stages[-1]
        if not all(self.stats_path(final, i).exists() for i in range(len(self.shards))):
            with self._workers(workers or self.config.workers):
                for stage in self.stages:
                    self._fit(stage, progress=progress)
                    self._run_stage(stage, progress=progress)
        if not self.config.keep_work:  # intermediate documents; their statistics stay for the report
            for stage in self.stages[:-1]:
                for shard in range(len(self.shards)):
                    self.shard_path(stage, shard).unlink(missing_ok=True)
        report = self.report()
        write_json_atomic(self.output / "report.json", report.to_json())
        if report.docs_out == 0:
            raise DataError(f"the pipeline kept no documents; {self.output / 'report.json'} shows which step "
                            "removed them and why: loosen its thresholds or check the input")
        return report

    def check_resumable(self, *, engine: dict[str, Any]) -> None:
        """Refuse a folder that holds something else, another config's run, or a run of another engine
        (or of the datatrove engine with another task count: its work files are per task)."""
        marker = self.output / PIPELINE_MARKER
        if not marker.exists() and any(p.name != LOCK_NAME for p in self.output.iterdir()):
            raise DataError(f"output folder {self.output} is not empty and holds no tnlm pipeline run; "
                            "give an empty or new folder")
        if marker.exists():
            previous = json.loads(marker.read_text(encoding="utf-8"))
            if previous != json.loads(json.dumps(self.config.fingerprint())):
                raise DataError(f"{self.output} holds a run of a different pipeline config; "
                                "use a new output folder, or delete that one to start over")
        else:
            write_json_atomic(marker, self.config.fingerprint())
        record = self.work / "engine.json"
        if record.exists() and (previous := json.loads(record.read_text(encoding="utf-8"))) != engine:
            how = ", ".join(f"{k} {v}" for k, v in previous.items())
            raise DataError(f"{self.output} holds a run made with {how}; rerun it the same way, or use a new output folder")
        write_json_atomic(record, engine)
        for stale in self.output.rglob(".*.tmp*"):  # temporary files of a killed run
            stale.unlink()

    def read_input(self, stage: Stage, shard: int) -> Iterator[Document]:
        if stage.index == 0:
            return self.source.read(self.shards[shard])
        return read_documents(self.shard_path(self.stages[stage.index - 1], shard))

    def _fit(self, stage: Stage, *, progress: bool) -> None:
        """Fit the global step at the head of a stage: features per shard (in parallel), then decide."""
        first = stage.step_indices[0] if stage.step_indices else None
        if first is None or not isinstance(self.steps[first], GlobalStep) or self.fit_path(first).exists():
            return
        step = self.steps[first]
        start = time.perf_counter()
        tasks = [(stage.index, i) for i in range(len(self.shards))]
        with closing(self._map(_features_task, tasks, ordered=True)) as results:
            per_shard = tqdm(results, total=len(tasks), desc=f"fit {step.name}", disable=not progress, file=sys.stderr)
            step.decisions = step.decide((f"{i}:{pos}", f) for i, feats in enumerate(per_shard) for pos, f in enumerate(feats))
        step.fit_seconds = time.perf_counter() - start
        write_json_atomic(self.fit_path(first), step.state())

    def shard_features(self, stage_index: int, shard: int) -> list[Any]:
        stage = self.stages[stage_index]
        step = self.steps[stage.step_indices[0]]
        assert isinstance(step, GlobalStep)
        return step.features(list(self.read_input(stage, shard)))

    def _run_stage(self, stage: Stage, *, progress: bool) -> None:
        todo = [(stage.index, i) for i in range(len(self.shards)) if not self.stats_path(stage, i).exists()]
        bar = tqdm(total=len(self.shards), initial=len(self.shards) - len(todo), desc=f"stage {stage.index}",
                   disable=not progress, file=sys.stderr)
        with closing(self._map(_run_shard_task, todo, ordered=False)) as results:
            for _ in results:
                bar.update()
        bar.close()

    @contextmanager
    def _workers(self, workers: int) -> Iterator[None]:
        """One pool of forked workers (spawned where fork is missing) for every stage of the run, so
        processes start once and keep their warm caches; none for one worker or one shard."""
        global _ACTIVE
        _ACTIVE = self  # forked workers inherit it; spawned ones rebuild it from the config
        if workers <= 1 or len(self.shards) <= 1:
            yield
            return
        start_method = "fork" if sys.platform == "linux" else "spawn"
        with worker_pool(min(workers, len(self.shards)), initializer=_init_worker, initargs=(asdict(self.config),),
                         start_method=start_method) as pool:  # Ctrl-C: the workers stop with the pipeline
            self._pool = pool
            try:
                yield
            finally:
                self._pool = None

    def _map(self, fn: Callable[[tuple[int, int]], Any], tasks: list[tuple[int, int]], *, ordered: bool) -> Iterator[Any]:
        """fn over (stage, shard) tasks, in this process or in the run's pool. The pool gets the largest
        shards first, so that no big shard starts last and keeps one worker busy while the others idle;
        `ordered` yields the results in the order of `tasks` all the same."""
        if self._pool is None or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        sizes = [self.estimated_bytes(*task) for task in tasks]
        largest_first = sorted(range(len(tasks)), key=lambda i: -sizes[i])
        results = self._pool.imap_unordered(_indexed_task, [(i, fn, tasks[i]) for i in largest_first])
        if not ordered:
            yield from (result for _, result in results)
            return
        waiting: dict[int, Any] = {}
        next_index = 0
        for i, result in results:
            waiting[i] = result
            while next_index in waiting:
                yield waiting.pop(next_index)
                next_index += 1

    def estimated_bytes(self, stage_index: int, shard: int) -> int:
        """How much input one task reads: the source's estimate, or the previous stage's file size."""
        if stage_index == 0:
            if self._source_bytes is None:
                self._source_bytes = self.source.shard_bytes(self.shards)
            return self._source_bytes[shard]
        path = self.shard_path(self.stages[stage_index - 1], shard)
        return path.stat().st_size if path.exists() else 0

    def run_shard(self, stage_index: int, shard: int) -> None:
        """Run one stage on one shard: write its documents, then its statistics (the done marker)."""
        stage = self.stages[stage_index]
        steps = [self.steps[i] for i in stage.step_indices]
        self.source.stats = StepStats("read")
        for i, step in zip(stage.step_indices, steps):
            step.stats = StepStats(step.name)
            if isinstance(step, GlobalStep):
                step.load_state(json.loads(self.fit_path(i).read_text(encoding="utf-8")))
        docs: Iterator[Document] = self.read_input(stage, shard)
        for step in steps:
            docs = step.run(docs, rank=shard, world_size=len(self.shards))
        write_documents(self.shard_path(stage, shard), docs)
        stats = {str(i): step.stats.to_json() for i, step in zip(stage.step_indices, steps)}
        if stage_index == 0:
            stats["read"] = self.source.stats.to_json()
        write_json_atomic(self.stats_path(stage, shard), stats)

    def report(self) -> Report:
        return collect_report(self.output, [stage.folder for stage in self.stages],
                              [self.fit_path(i) for i, step in enumerate(self.steps) if isinstance(step, GlobalStep)])


def collect_report(output: Path, stage_folders: list[Path], fit_paths: list[Path]) -> Report:
    """Merge the statistics files of every stage (one per shard, or per datatrove task) and the fit
    files of the global steps (their counters and time) into the run's report."""
    merged: dict[str, StepStats] = {}
    for folder in stage_folders:
        for path in sorted((folder / "_stats").glob("*.json")):
            for key, row in json.loads(path.read_text(encoding="utf-8")).items():
                stats = StepStats.from_json(row)
                merged.setdefault(key, StepStats(stats.name)).merge(stats)
    for path in fit_paths:
        key = str(int(path.name.split("-")[1]))  # fit-NN-name.json
        if path.exists() and key in merged:
            fit = json.loads(path.read_text(encoding="utf-8"))
            merged[key].counters.update(fit["fit_counters"])
            merged[key].seconds += fit["fit_seconds"]  # the fit is most of a global step's work
    order = ["read"] + sorted((k for k in merged if k != "read"), key=int)
    return Report(steps=[merged[k] for k in order], output=str(output))


_ACTIVE: Pipeline | None = None


def _init_worker(config: dict[str, Any]) -> None:
    global _ACTIVE
    if "torch" in sys.modules:  # a model scorer: one thread per worker, the workers share the cores
        sys.modules["torch"].set_num_threads(1)
    if _ACTIVE is None:
        _ACTIVE = Pipeline(PipelineConfig(**config))


def _run_shard_task(task: tuple[int, int]) -> None:
    assert _ACTIVE is not None
    _ACTIVE.run_shard(*task)


def _indexed_task(job: tuple[int, Callable[[tuple[int, int]], Any], tuple[int, int]]) -> tuple[int, Any]:
    index, fn, task = job
    return index, fn(task)


def _features_task(task: tuple[int, int]) -> list[Any]:
    assert _ACTIVE is not None
    return _ACTIVE.shard_features(*task)


def run_pipeline(config: PipelineConfig | dict[str, Any] | str | Path, *, workers: int | None = None,
                 progress: bool = True) -> Report:
    """Run a pipeline from a config object, a dict, or a YAML path."""
    if isinstance(config, (str, Path)):
        config = PipelineConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = PipelineConfig.from_dict(config)
    return Pipeline(config).run(workers=workers, progress=progress)
