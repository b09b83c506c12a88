"""Run tnlm's steps under datatrove's executors (local, Slurm, Ray) for corpora that outgrow one
machine. Needs the `data` extra. tnlm's per-document steps are wrapped as datatrove pipeline steps
(datatrove's `Document` has the same `text`, `id` and `metadata` fields, so the steps run unchanged);
global steps (deduplication, perplexity tail) need every document at once: use datatrove's own
multi-stage MinHash/exact deduplication there, or tnlm's executor (`tnlm data run`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tnlm.errors import DataError
from tnlm.data.pipeline import PipelineConfig
from tnlm.data.registry import STEPS, build_step
from tnlm.data.sources import build_source
from tnlm.data.step import GlobalStep

try:
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.base import PipelineStep
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("the datatrove engine needs the data extra: pip install 'tnlm[data]'") from err


class TnlmSource(PipelineStep):
    """Reads a tnlm source; datatrove task `rank` of `world_size` takes every world_size-th shard."""

    name = "tnlm source"
    type = "📖 - READER"

    def __init__(self, source: dict[str, Any]) -> None:
        super().__init__()
        self.source = source

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[DatatroveDocument]:
        source = build_source(self.source)
        for doc in source.documents(source.shards()[rank::world_size]):
            self.stat_update("documents")
            yield DatatroveDocument(text=doc.text, id=doc.id, metadata=doc.metadata)


class TnlmStep(PipelineStep):
    """One tnlm step (built inside the worker from its YAML entry) as a datatrove step."""

    type = "🔻 - TNLM"

    def __init__(self, entry: dict[str, Any]) -> None:
        self.name = str(entry.get("step"))  # before super().__init__, which names the stats after it
        super().__init__()
        self.entry = entry
        if issubclass(STEPS.get(self.name, object), GlobalStep):
            raise DataError(f"{self.name} is a global step and cannot run per task under datatrove; "
                            "use datatrove's own dedup stages or `tnlm data run`")

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[DatatroveDocument]:
        step = build_step(self.entry)
        for doc in step.run(data or [], rank, world_size):
            self.stat_update("kept")
            yield doc
        for reason, count in step.stats.reasons.items():
            self.stat_update(f"removed_{reason}", value=count)
        for key, count in step.stats.counters.items():
            self.stat_update(key, value=count)


def datatrove_executor(config: PipelineConfig, *, workers: int = 2, tasks: int | None = None,
                       logging_dir: str | None = None, start_method: str | None = None):  # -> LocalPipelineExecutor
    """A datatrove LocalPipelineExecutor for the pipeline; swap in its SlurmPipelineExecutor or
    RayPipelineExecutor with the same `pipeline` list to run on a cluster."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import JsonlWriter

    pipeline = [TnlmSource(config.source)] + [TnlmStep(entry) for entry in config.steps]
    compression = {"gzip": "gzip", "zstd": "zstd"}.get(config.compression or "", None)
    pipeline.append(JsonlWriter(config.output, output_filename="${rank}.jsonl" + {"gzip": ".gz", "zstd": ".zst"}.get(
        config.compression or "", ""), compression=compression))
    n_tasks = tasks or len(build_source(config.source).shards())
    return LocalPipelineExecutor(
        pipeline=pipeline, tasks=n_tasks, workers=workers,
        logging_dir=logging_dir or str(Path(config.output) / "_datatrove_logs"),
        start_method=start_method or ("fork" if sys.platform == "linux" else "spawn"),
    )
