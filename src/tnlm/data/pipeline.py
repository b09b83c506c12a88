"""The pipeline: a YAML list of steps run over the shards of a source, in parallel, resumably.

Steps are grouped into stages at the global steps (deduplication, perplexity tail): a stage starts
with the global steps that head it, fitted once over all documents of the stage before it (their
decisions saved), and goes on with ordinary steps. Every stage runs shard by shard in a process pool,
each worker reading its own shard and writing its own output; a shard's pass also computes, from the
documents it writes, the features of the next stage's global steps (hashes, MinHash signatures,
scores), so that a fit is a small merge in the parent and costs no pass of its own. Consecutive global
steps with cheap features (exact, then MinHash dedup) share one stage and one pass. Each shard's output
is written atomically, then its features, then its statistics file, which marks it done: a rerun after
a crash skips finished shards and fits, and produces the same output as a run that was never
interrupted."""

from __future__ import annotations

import gc
import json
import pickle
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from multiprocessing.pool import Pool
from pathlib import Path
from typing import Any

import yaml
from tqdm import tqdm

from tnlm.data.document import Document
from tnlm.fsutil import expand_home, remove_unfinished
from tnlm.errors import DataError
from tnlm.data.files import atomic_path, read_documents, write_documents, write_json_atomic
from tnlm.data.lock import LOCK_NAME, folder_lock
from tnlm.data.paths import PIPELINE_MARKER
from tnlm.data.registry import build_step
from tnlm.data.report import Report
from tnlm.data.sources import Source, build_source
from tnlm.data.step import GlobalStep, Step, StepStats
from tnlm.interrupt import worker_pool

SUFFIXES = {None: ".jsonl", "none": ".jsonl", "gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}
WORK_LAYOUT = 2  # 2: global steps' features written by the pass before them, cheap ones chained


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
    step_indices: list[int]  # into config.steps; the first ones may be global steps
    folder: Path
    heads: list[int] = field(default_factory=list)  # the global steps it starts with, fitted before it runs


class Pipeline:
    """Runs a `PipelineConfig`; `run()` returns the merged `Report`."""

    def __init__(self, config: PipelineConfig, *, chain_global_steps: bool = True) -> None:
        """`chain_global_steps`: consecutive global steps with cheap features share a stage (the datatrove
        engine, whose blocks fit one global step per stage, turns it off)."""
        self.config = config
        self.chain_global_steps = chain_global_steps
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
            if isinstance(step, GlobalStep) and groups[-1] and not self._chains(step, groups[-1]):
                groups.append([])
            groups[-1].append(i)
        last = len(groups) - 1
        stages = [Stage(s, g, self.output if s == last else self.work / f"stage{s}") for s, g in enumerate(groups)]
        for stage in stages:
            for i in stage.step_indices:
                if not isinstance(self.steps[i], GlobalStep):
                    break
                stage.heads.append(i)
        return stages

    def _chains(self, step: GlobalStep, group: list[int]) -> bool:
        """Whether `step` joins a stage made of global steps so far, its features computed in the same
        pass as theirs (so also for the documents they remove)."""
        return (self.chain_global_steps and step.cheap_features
                and all(isinstance(self.steps[i], GlobalStep) for i in group))

    def shard_path(self, stage: Stage, shard: int) -> Path:
        return stage.folder / f"shard-{shard:05d}{SUFFIXES[self.config.compression]}"

    def stats_path(self, stage: Stage, shard: int) -> Path:
        return stage.folder / "_stats" / f"shard-{shard:05d}.json"

    def fit_path(self, step_index: int) -> Path:
        return self.work / f"fit-{step_index:02d}-{self.steps[step_index].name}.json"

    def features_path(self, step_index: int, shard: int) -> Path:
        """A global step's features of one shard's documents (written by the pass that writes them)."""
        return self.work / "features" / f"{step_index:02d}-{self.steps[step_index].name}" / f"shard-{shard:05d}.pkl"

    def run(self, *, workers: int | None = None, progress: bool = True) -> Report:
        """Run (or resume) the pipeline, holding the output folder's lock: a second run into the same
        folder is refused while this one lives."""
        with folder_lock(self.output):
            return self._run(workers=workers, progress=progress)

    def _run(self, *, workers: int | None, progress: bool) -> Report:
        self.check_resumable(engine={"engine": "tnlm", "work_layout": WORK_LAYOUT})
        final = self.stages[-1]
        if not all(self.stats_path(final, i).exists() for i in range(len(self.shards))):
            with self._workers(workers or self.config.workers):
                for stage in self.stages:
                    self._fit(stage, progress=progress)
                    self._run_stage(stage, progress=progress)
        if not self.config.keep_work:  # intermediate documents and features; their statistics stay for the report
            for stage in self.stages[:-1]:
                for shard in range(len(self.shards)):
                    self.shard_path(stage, shard).unlink(missing_ok=True)
            shutil.rmtree(self.work / "features", ignore_errors=True)
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
        if not marker.exists():
            remove_unfinished(marker)  # a run killed while writing the marker leaves its temporary file: no data
            with suppress(OSError):
                marker.parent.rmdir()  # only if empty
            if any(p.name != LOCK_NAME for p in self.output.iterdir()):
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
            if _without_layout(previous) == _without_layout(engine):
                raise DataError(f"{self.output} holds a run made by another tnlm version, whose work files differ; "
                                "use a new output folder, or delete that one to start over")
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
        """Fit the global steps heading a stage, in order, from the features of the documents before it
        (computed by the pass that wrote them; by a pass of their own over the source for stage 0). A
        head after the first decides over the documents the ones before it keep, numbered as they will
        reach it."""
        if not stage.heads or all(self.fit_path(i).exists() for i in stage.heads):
            return
        missing = [(stage.index, s) for s in range(len(self.shards)) if not self._has_features(stage, s)]
        if missing:
            bar = tqdm(total=len(missing), desc=f"features of stage {stage.index}", disable=not progress, file=sys.stderr)
            with closing(self._map(_features_task, missing)) as results:
                for _ in results:
                    bar.update()
            bar.close()
        alive: list[list[int]] | None = None  # per shard: the positions the heads so far keep
        for n, i in enumerate(stage.heads):
            step = self.steps[i]
            assert isinstance(step, GlobalStep)
            if self.fit_path(i).exists():
                step.load_state(json.loads(self.fit_path(i).read_text(encoding="utf-8")))
            else:
                start, seconds = time.perf_counter(), [0.0]
                step.decisions = step.decide(self._keyed_features(i, alive, seconds))
                step.fit_seconds = seconds[0] + time.perf_counter() - start
                write_json_atomic(self.fit_path(i), step.state())
            if n + 1 < len(stage.heads):  # the next head decides over what this one keeps
                alive = self._survivors(i, alive, step.decisions or {})

    def _has_features(self, stage: Stage, shard: int) -> bool:
        return all(self.features_path(i, shard).exists() for i in stage.heads)

    def _load_features(self, step_index: int, shard: int) -> dict[str, Any]:
        with open(self.features_path(step_index, shard), "rb") as f:
            return pickle.load(f)

    def _keyed_features(self, step_index: int, alive: list[list[int]] | None, seconds: list[float]) -> Iterator[tuple[str, Any]]:
        """("shard:position", feature) of the documents that reach the step, in corpus order; adds the
        time the features took to `seconds[0]`."""
        for shard in range(len(self.shards)):
            saved = self._load_features(step_index, shard)
            seconds[0] += saved["seconds"]
            values = saved["features"]
            positions = range(len(values)) if alive is None else alive[shard]
            yield from ((f"{shard}:{new}", values[old]) for new, old in enumerate(positions))

    def _survivors(self, step_index: int, alive: list[list[int]] | None, decisions: dict[str, str]) -> list[list[int]]:
        """The positions (in the documents before the stage) that the step keeps, per shard."""
        survivors = []
        for shard in range(len(self.shards)):
            positions = range(len(self._load_features(step_index, shard)["features"])) if alive is None else alive[shard]
            survivors.append([old for new, old in enumerate(positions) if f"{shard}:{new}" not in decisions])
        return survivors

    def write_features(self, stage_index: int, shard: int) -> None:
        """Features of a stage's heads over one shard of its input, for a stage no pass wrote them for."""
        stage = self.stages[stage_index]
        self._save_features(stage.heads, shard, list(self.read_input(stage, shard)))

    def _save_features(self, heads: list[int], shard: int, docs: list[Document]) -> None:
        for i in heads:
            step = self.steps[i]
            assert isinstance(step, GlobalStep)
            start = time.perf_counter()
            values = step.features(docs)
            with atomic_path(self.features_path(i, shard)) as tmp, open(tmp, "wb") as f:
                pickle.dump({"seconds": time.perf_counter() - start, "features": values}, f, protocol=pickle.HIGHEST_PROTOCOL)

    def _run_stage(self, stage: Stage, *, progress: bool) -> None:
        todo = [(stage.index, i) for i in range(len(self.shards)) if not self.stats_path(stage, i).exists()]
        bar = tqdm(total=len(self.shards), initial=len(self.shards) - len(todo), desc=f"stage {stage.index}",
                   disable=not progress, file=sys.stderr)
        with closing(self._map(_run_shard_task, todo)) as results:
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
        self.estimated_bytes(0, 0)  # the source's shard sizes (the built-in source's file listing), once, here
        gc.freeze()  # the parent's objects out of the collector's reach: no copy-on-write of their pages by it
        try:
            with worker_pool(min(workers, len(self.shards)), initializer=_init_worker,
                             initargs=(asdict(self.config), self.chain_global_steps),
                             start_method=start_method) as pool:  # Ctrl-C: the workers stop with the pipeline
                self._pool = pool
                try:
                    yield
                finally:
                    self._pool = None
        finally:
            gc.unfreeze()

    def _map(self, fn: Callable[[tuple[int, int]], Any], tasks: list[tuple[int, int]]) -> Iterator[Any]:
        """fn over (stage, shard) tasks, in this process or in the run's pool, results as they finish.
        The pool gets the largest shards first, so that no big shard starts last and keeps one worker
        busy while the others idle."""
        if self._pool is None or len(tasks) <= 1:
            yield from map(fn, tasks)
            return
        sizes = [self.estimated_bytes(*task) for task in tasks]
        largest_first = sorted(range(len(tasks)), key=lambda i: -sizes[i])
        yield from self._pool.imap_unordered(fn, [tasks[i] for i in largest_first])

    def estimated_bytes(self, stage_index: int, shard: int) -> int:
        """How much input one task reads: the source's estimate, or the previous stage's file size."""
        if stage_index == 0:
            if self._source_bytes is None:
                self._source_bytes = self.source.shard_bytes(self.shards)
            return self._source_bytes[shard]
        path = self.shard_path(self.stages[stage_index - 1], shard)
        return path.stat().st_size if path.exists() else 0

    def run_shard(self, stage_index: int, shard: int) -> None:
        """Run one stage on one shard: write its documents, then the features of the next stage's heads
        over them, then its statistics (the done marker)."""
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
        heads = self.stages[stage_index + 1].heads if stage_index + 1 < len(self.stages) else []
        written: list[Document] = []
        write_documents(self.shard_path(stage, shard), _kept(docs, written) if heads else docs)
        if heads:
            self._save_features(heads, shard, written)
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


def _without_layout(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "work_layout"}


_ACTIVE: Pipeline | None = None


def _init_worker(config: dict[str, Any], chain_global_steps: bool) -> None:
    global _ACTIVE
    if "torch" in sys.modules:  # a model scorer: one thread per worker, the workers share the cores
        sys.modules["torch"].set_num_threads(1)
    if _ACTIVE is None:  # spawned, not forked: the same stage plan as the parent's
        _ACTIVE = Pipeline(PipelineConfig(**config), chain_global_steps=chain_global_steps)


def _run_shard_task(task: tuple[int, int]) -> None:
    assert _ACTIVE is not None
    _ACTIVE.run_shard(*task)


def _features_task(task: tuple[int, int]) -> None:
    assert _ACTIVE is not None
    _ACTIVE.write_features(*task)


def _kept(docs: Iterator[Document], into: list[Document]) -> Iterator[Document]:
    """`docs`, each also appended to `into`."""
    for doc in docs:
        into.append(doc)
        yield doc


def run_pipeline(config: PipelineConfig | dict[str, Any] | str | Path, *, workers: int | None = None,
                 progress: bool = True) -> Report:
    """Run a pipeline from a config object, a dict, or a YAML path."""
    if isinstance(config, (str, Path)):
        config = PipelineConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = PipelineConfig.from_dict(config)
    return Pipeline(config).run(workers=workers, progress=progress)
