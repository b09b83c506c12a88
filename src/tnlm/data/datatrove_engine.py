"""The datatrove engine: every step of a pipeline YAML under datatrove's local, Slurm or Ray executor.

    tnlm data run CONFIG --engine datatrove [--executor local|slurm|ray] [--tasks N] [--workers N]

The steps are cut into stages at each global step, as in tnlm's own engine, and each stage becomes a
datatrove job of N tasks (task r takes a contiguous block of the source's shards): read, the stage's
steps, write one file per shard. A global step maps onto datatrove's own multi-stage blocks, its first
block running in the job before it, on the documents that job writes:

    exact_dedup      ExactDedupSignature -> ExactFindDedups (1 task) -> ExactDedupFilter
    minhash_dedup    MinhashDedupSignature -> MinhashDedupBuckets (one task per band) -> MinhashDedupCluster
                     (1 task) -> MinhashDedupFilter
    perplexity_tail  scores (the step's `features`) -> threshold (`decide`, 1 task) -> removal

A last one-task job merges the statistics into report.json. The output folder has the same shards,
report and marker as tnlm's engine; datatrove's logs and work files are in `_work/datatrove/`. A rerun
skips the tasks datatrove marked complete, so a killed run resumes; the task count is part of the run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from tnlm.data.dedup import ExactDedup, MinHashDedup
from tnlm.data.lock import folder_lock
from tnlm.data.perplexity import PerplexityTail
from tnlm.data.pipeline import SUFFIXES, Pipeline, PipelineConfig, Stage, collect_report
from tnlm.data.report import Report
from tnlm.data.step import GlobalStep
from tnlm.errors import DataError

EXECUTORS = ("local", "slurm", "ray")
GLOBAL_MAPPINGS = {"exact_dedup": ExactDedup, "minhash_dedup": MinHashDedup, "perplexity_tail": PerplexityTail}
log = logging.getLogger(__name__)


def check_executor(executor: str) -> None:
    """A clear error when the executor is unknown or its package is not installed."""
    if executor not in EXECUTORS:
        raise DataError(f"unknown executor {executor!r}: use {', '.join(EXECUTORS)}")
    try:
        import datatrove  # noqa: F401
    except ImportError:
        raise DataError("--engine datatrove needs datatrove: pip install 'tnlm[data]'") from None
    if executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise DataError("--executor ray needs Ray: pip install 'tnlm[ray]'") from None
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise DataError("--executor slurm submits jobs with Slurm's sbatch, which is not on PATH: run on a "
                        "Slurm login node (or use --executor local or ray)")


@dataclass
class Job:
    """One datatrove executor: a pipeline of blocks run as `tasks` tasks."""

    name: str
    blocks: list[Any]
    tasks: int


class DatatroveRun:
    """Plans a pipeline config as a chain of datatrove jobs and runs (or submits) them."""

    def __init__(self, config: PipelineConfig, *, executor: str = "local", tasks: int | None = None,
                 workers: int | None = None) -> None:
        check_executor(executor)
        # checks the config, plans the stages (one global step heading each), lists the shards
        self.pipeline = Pipeline(config, chain_global_steps=False)
        self.config, self.executor = config, executor
        for step in self.pipeline.steps:
            if isinstance(step, GlobalStep) and not isinstance(step, GLOBAL_MAPPINGS.get(step.name, ())):
                raise DataError(f"step {step.name!r} has no datatrove mapping (global steps that do: "
                                f"{', '.join(GLOBAL_MAPPINGS)}); run this config with --engine tnlm")
        shards = len(self.pipeline.shards)
        if tasks is not None and tasks < 1:
            raise DataError("--tasks must be at least 1")
        if tasks and tasks > shards:
            log.warning("the source has %d shards, so %d tasks run, not %d (split files with `split_files` for more)",
                        shards, shards, tasks)
        self.tasks = min(tasks or shards, shards)
        self.workers = max(workers or config.workers, 1)
        self.output = Path(config.output).resolve()
        self.root = self.output / "_work" / "datatrove"
        self.fit_logs: dict[int, list[tuple[str, str | None]]] = {}  # step -> (log folder, block or None: all)
        self.jobs = self._plan()

    # planning -------------------------------------------------------------------------------------

    def _plan(self) -> list[Job]:
        jobs: list[Job] = []
        stages = self.pipeline.stages
        if self._is_global(stages[0]):  # a global step first: its signatures need a pass over the source
            jobs.append(Job("source-prep", [self._reader(stages[0])] + self._prepare(stages[0], "source-prep"),
                            self.tasks))
            jobs += self._global_jobs(stages[0])
        for stage in stages:
            nxt = stages[stage.index + 1] if stage.index + 1 < len(stages) else None
            name = f"stage{stage.index}"
            blocks = self._stage_blocks(stage) + (self._prepare(nxt, name) if nxt is not None else [])
            jobs.append(Job(name, blocks, self.tasks))
            if nxt is not None:
                jobs += self._global_jobs(nxt)
        jobs.append(Job("report", [self._report_block()], 1))
        return jobs

    def _is_global(self, stage: Stage) -> bool:
        return isinstance(self.pipeline.steps[stage.step_indices[0]], GlobalStep)

    def _folder(self, stage: Stage) -> Path:
        """Where a stage writes: the output folder for the last, `_work/stageN` before."""
        return self.output if stage.index == len(self.pipeline.stages) - 1 else self.output / "_work" / f"stage{stage.index}"

    def log_dir(self, job_name: str) -> Path:
        return self.root / "logs" / job_name

    def _work(self, index: int) -> Path:
        return self.root / f"{index:02d}-{self.pipeline.steps[index].name}"

    def _reader(self, stage: Stage) -> Any:
        from tnlm.data.datatrove_adapter import ShardReader

        suffix = SUFFIXES[self.config.compression]
        if stage.index == 0:
            return ShardReader(shards=self.pipeline.shards, source=self.config.source, suffix=suffix)
        previous = self._folder(self.pipeline.stages[stage.index - 1])
        return ShardReader(shards=self.pipeline.shards, folder=str(previous), suffix=suffix)

    def _stage_blocks(self, stage: Stage) -> list[Any]:
        from tnlm.data.datatrove_adapter import ShardWriter, TnlmStep

        reader = self._reader(stage)
        blocks: list[Any] = [reader]
        counted: list[tuple[str, Any]] = []
        for n, i in enumerate(stage.step_indices):
            block = self._apply(i) if n == 0 and self._is_global(stage) else TnlmStep(self.config.steps[i])
            blocks.append(block)
            counted.append((str(i), block))
        blocks.append(ShardWriter(folder=str(self._folder(stage)), suffix=SUFFIXES[self.config.compression],
                                  n_shards=len(self.pipeline.shards), reader=reader if stage.index == 0 else None,
                                  counted=counted))
        return blocks

    def _prepare(self, stage: Stage, job_name: str) -> list[Any]:
        """The first block of the global step heading `stage`, run in job `job_name` (the one before)."""
        from datatrove.pipeline.dedup import ExactDedupSignature, MinhashDedupSignature

        from tnlm.data.datatrove_adapter import FeatureWriter, TnlmWords

        i = stage.step_indices[0]
        step, work = self.pipeline.steps[i], self._work(i)
        if isinstance(step, ExactDedup):
            block = ExactDedupSignature(output_folder=str(work / "signatures"), config=exact_config(), finder_workers=1)
        elif isinstance(step, MinHashDedup):
            block = MinhashDedupSignature(output_folder=str(work / "signatures"), config=minhash_config(step),
                                          language=TnlmWords())
        else:
            return [FeatureWriter(entry=self.config.steps[i], folder=str(work / "features"))]
        own = [self.log_dir(f"{i:02d}-{step.name}-{part}") for part in ("find", "buckets", "cluster")]
        self.fit_logs[i] = [(str(self.log_dir(job_name)), str(block))] + [(str(d), None) for d in own]
        return [block]

    def _global_jobs(self, stage: Stage) -> list[Job]:
        """The global step's middle jobs: finding duplicates, or deciding from the scores."""
        from datatrove.pipeline.dedup import ExactFindDedups, MinhashDedupBuckets, MinhashDedupCluster

        from tnlm.data.datatrove_adapter import Decider

        i = stage.step_indices[0]
        step, work, name = self.pipeline.steps[i], self._work(i), f"{i:02d}-{self.pipeline.steps[i].name}"
        if isinstance(step, ExactDedup):
            return [Job(f"{name}-find", [ExactFindDedups(data_folder=str(work / "signatures"),
                                                         output_folder=str(work / "duplicates"), config=exact_config())], 1)]
        if isinstance(step, MinHashDedup):
            config = minhash_config(step)
            return [Job(f"{name}-buckets", [MinhashDedupBuckets(input_folder=str(work / "signatures"),
                                                               output_folder=str(work / "buckets"), config=config)],
                        config.num_buckets),
                    Job(f"{name}-cluster", [MinhashDedupCluster(input_folder=str(work / "buckets"),
                                                               output_folder=str(work / "remove"), config=config)], 1)]
        return [Job(f"{name}-decide", [Decider(entry=self.config.steps[i], folder=str(work / "features"),
                                               tasks=self.tasks, fit_path=str(self.fit_path(i)))], 1)]

    def fit_path(self, i: int) -> Path:
        return self.output / "_work" / self.pipeline.fit_path(i).name

    def _apply(self, i: int) -> Any:
        """The global step's last block: the removal, counted like a tnlm step."""
        from datatrove.pipeline.dedup import ExactDedupFilter, MinhashDedupFilter

        from tnlm.data.datatrove_adapter import CountedFilter, DecisionApplier

        step, work = self.pipeline.steps[i], self._work(i)
        if isinstance(step, ExactDedup):
            return CountedFilter(ExactDedupFilter(data_folder=str(work / "duplicates"), config=exact_config()),
                                 name=step.name, reason="exact_duplicate", drop_metadata=("duplicate_count",))
        if isinstance(step, MinHashDedup):
            return CountedFilter(MinhashDedupFilter(input_folder=str(work / "remove")), name=step.name,
                                 reason="near_duplicate")
        return DecisionApplier(name=step.name, fit_path=str(self.fit_path(i)))

    def _report_block(self) -> Any:
        from tnlm.data.datatrove_adapter import ReportBlock

        return ReportBlock(output=str(self.output), stage_folders=[str(self._folder(s)) for s in self.pipeline.stages],
                           fit_paths={i: str(self.fit_path(i)) for i, s in enumerate(self.pipeline.steps)
                                      if isinstance(s, GlobalStep)},
                           dedup_logs=self.fit_logs, keep_work=self.config.keep_work,
                           suffix=SUFFIXES[self.config.compression], n_shards=len(self.pipeline.shards))

    # running --------------------------------------------------------------------------------------

    def executors(self) -> list[Any]:
        """One datatrove executor per job, each depending on the one before."""
        executors: list[Any] = []
        for job in self.jobs:
            executors.append(self._executor(job, depends=executors[-1] if executors else None))
        return executors

    def _executor(self, job: Job, *, depends: Any) -> Any:
        from tnlm.data.datatrove_adapter import enter_folder

        options = dict((self.config.datatrove or {}).get(self.executor) or {})
        pipeline = [partial(enter_folder, folder=os.getcwd()), *job.blocks]
        common = {"pipeline": pipeline, "tasks": job.tasks, "logging_dir": str(self.log_dir(job.name))}
        try:
            if self.executor == "local":
                from datatrove.executor import LocalPipelineExecutor

                return LocalPipelineExecutor(**common, workers=min(self.workers, job.tasks), depends=depends,
                                             start_method="fork" if sys.platform == "linux" else "spawn", **options)
            if self.executor == "ray":
                from datatrove.executor import RayPipelineExecutor

                return RayPipelineExecutor(**common, workers=self.workers, depends=depends, **options)
            from datatrove.executor import SlurmPipelineExecutor

            missing = {"partition", "time"} - set(options)
            if missing:
                raise DataError(f"--executor slurm needs datatrove: slurm: {{{', '.join(sorted(missing))}: ...}} in "
                                "the pipeline config (and any other SlurmPipelineExecutor option)")
            return SlurmPipelineExecutor(**common, depends=depends, job_name=f"tnlm-{job.name}", **options)
        except TypeError as err:
            raise DataError(f"bad datatrove: {self.executor}: options in the pipeline config: {err}") from err

    def run(self) -> Report | None:
        """Run every job (local, Ray) and return the report, or submit them all (Slurm) and return None."""
        if self.executor == "slurm":  # the jobs run later, unlocked: one submission per folder at a time
            with folder_lock(self.output):
                self.pipeline.check_resumable(engine=self.engine_record())
                self.executors()[-1].run()  # submits the whole chain, each job depending on the one before
            return None
        if self.executor == "ray":
            import ray

            if not ray.is_initialized():  # RAY_ADDRESS, if set, names the cluster; else a local one
                ray.init(num_cpus=None if _ray_address() else self.workers, include_dashboard=False)
        with folder_lock(self.output):
            self.pipeline.check_resumable(engine=self.engine_record())
            for job, executor in zip(self.jobs, self.executors()):
                start = time.perf_counter()
                executor.run()
                if incomplete := executor.get_incomplete_ranks():
                    raise DataError(f"datatrove job {job.name}: tasks {incomplete} did not finish; their logs are in "
                                    f"{self.log_dir(job.name) / 'logs'}; rerun the same command to resume")
                log.info("datatrove job %s: %d tasks in %.1f s", job.name, job.tasks, time.perf_counter() - start)
        return read_report(self.output)

    def engine_record(self) -> dict[str, Any]:
        return {"engine": "datatrove", "tasks": self.tasks}


def _ray_address() -> str | None:
    return os.environ.get("RAY_ADDRESS")


def read_report(output: Path) -> Report:
    """The report a finished run wrote; a run that kept nothing is an error, as with tnlm's engine."""
    from tnlm.data.step import StepStats

    row = json.loads((output / "report.json").read_text(encoding="utf-8"))
    report = Report(steps=[StepStats.from_json(s) for s in row["steps"]], output=row["output"])
    if report.docs_out == 0:
        raise DataError(f"the pipeline kept no documents; {output / 'report.json'} shows which step removed "
                        "them and why: loosen its thresholds or check the input")
    return report


def exact_config() -> Any:
    """datatrove's exact dedup, comparing what tnlm's ExactDedup compares and keeping the first copy."""
    from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig
    from datatrove.utils.hashing import HashConfig

    from tnlm.data.datatrove_adapter import corpus_priority, exact_content

    return ExactDedupConfig(content_getter=exact_content, document_priority=corpus_priority,
                            hash_config=HashConfig(precision=64, hash_fc="xxhash"))


def minhash_config(step: MinHashDedup) -> Any:
    """datatrove's MinHash with the step's n-gram size, seed and LSH bands x rows (chosen for the
    threshold when the step leaves them out), on the same words as tnlm's MinHash."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    bands, rows = step.bands()
    words = TextNormConfig(lowercase=True, norm_whitespace=True, remove_punctuation=True,
                           norm_unicode_diacritics=False, norm_numbers=False)
    return MinhashConfig(n_grams=step.ngram, num_buckets=bands, hashes_per_bucket=rows, seed=step.seed,
                         norm_config=words, hash_config=HashConfig(precision=64, hash_fc="xxhash"))


def run_datatrove(config: PipelineConfig | dict[str, Any] | str | Path, *, executor: str = "local",
                  tasks: int | None = None, workers: int | None = None) -> Report | None:
    """Run a pipeline config under datatrove; None when the jobs were submitted to Slurm."""
    if isinstance(config, (str, Path)):
        config = PipelineConfig.from_yaml(config)
    elif isinstance(config, dict):
        config = PipelineConfig.from_dict(config)
    return DatatroveRun(config, executor=executor, tasks=tasks, workers=workers).run()
