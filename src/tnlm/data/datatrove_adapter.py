"""tnlm's pipeline pieces as datatrove pipeline steps (`run(data, rank, world_size)` generators), for the
datatrove engine (`datatrove_engine.py`). Needs the `data` extra.

Task `rank` of `world_size` takes a contiguous block of the source's shards, so the order of (task,
position) is corpus order; a reader tags each document with its shard, the writer writes one file per
shard (the same names as tnlm's own engine) and the statistics of the task's steps. tnlm's Document has
datatrove's `text`, `id` and `metadata`, so datatrove's dedup blocks take it as it is."""

from __future__ import annotations

import json
import pickle
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import groupby, islice
from pathlib import Path
from typing import Any

from tnlm.data.document import Document
from tnlm.data.files import atomic_path, open_text, read_documents, write_json_atomic
from tnlm.data.registry import build_step
from tnlm.data.sources import build_source
from tnlm.data.step import GlobalStep, StepStats
from tnlm.data.text import normalized_words, utf8_len

try:
    from datatrove.pipeline.base import PipelineStep
    from datatrove.utils.word_tokenizers import WordTokenizer
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("the datatrove engine needs the data extra: pip install 'tnlm[data]'") from err

SHARD_KEY = "_tnlm_shard"  # set by ShardReader, dropped by ShardWriter


def enter_folder(data: Any, rank: int, world_size: int, *, folder: str) -> Any:
    """The first item of every job's pipeline (a plain callable, run when the task starts): work in the
    folder the run was started from, so relative paths in the config mean the same on a Ray or Slurm
    worker (which must see the same file system)."""
    import os

    os.chdir(folder)
    return data


def shard_block(n_shards: int, rank: int, world_size: int) -> range:
    """The contiguous block of shards task `rank` of `world_size` processes."""
    return range(n_shards * rank // world_size, n_shards * (rank + 1) // world_size)


class ShardReader(PipelineStep):
    """Reads the task's block of shards: the source's (stage 0) or a previous stage's files."""

    name = "tnlm reader"
    type = "📖 - READER"

    def __init__(self, *, shards: list[str], source: dict[str, Any] | None = None, folder: str | None = None,
                 suffix: str = ".jsonl") -> None:
        super().__init__()
        self.shards, self.source, self.folder, self.suffix = shards, source, folder, suffix
        self.read_stats: StepStats | None = None

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        source = build_source(self.source) if self.source is not None else None
        for shard in shard_block(len(self.shards), rank, world_size):
            docs = source.read(self.shards[shard]) if source else read_documents(Path(self.folder) / f"shard-{shard:05d}{self.suffix}")
            for doc in docs:
                doc.metadata[SHARD_KEY] = shard
                self.stat_update("documents")
                yield doc
        self.read_stats = source.stats if source else None


class TnlmStep(PipelineStep):
    """One per-document tnlm step, built inside the task from its YAML entry."""

    type = "🔻 - TNLM"

    def __init__(self, entry: dict[str, Any]) -> None:
        self.name = str(entry["step"])  # before super().__init__, which names the statistics after it
        super().__init__()
        self.entry = entry
        self.step_stats: StepStats | None = None

    def run(self, data: Iterable[Document] | None = None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        step = build_step(self.entry)
        self.step_stats = step.stats
        yield from step.run(data or (), rank, world_size)
        self.stat_update("kept", value=step.stats.docs_out)
        self.stat_update("removed", value=step.stats.removed)


class _Decided(GlobalStep):
    """A global step's saved decisions, applied without rebuilding the step (its scorer, its index)."""

    def __init__(self, name: str, state: dict[str, Any]) -> None:
        self.name = name
        super().__init__()
        self.load_state(state)


class DecisionApplier(PipelineStep):
    """Removes the documents a global step decided to remove (keys "shard:position", as tnlm's engine)."""

    type = "🔻 - TNLM"

    def __init__(self, *, name: str, fit_path: str) -> None:
        self.name = name
        super().__init__()
        self.fit_path = fit_path
        self.step_stats: StepStats | None = None

    def run(self, data: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        step = _Decided(self.name, json.loads(Path(self.fit_path).read_text(encoding="utf-8")))
        self.step_stats = step.stats
        positions: Counter = Counter()
        for doc in data:
            shard = doc.metadata[SHARD_KEY]
            key, positions[shard] = f"{shard}:{positions[shard]}", positions[shard] + 1
            if (out := step.counted(partial(step.apply_decision, key=key), doc)) is not None:
                yield out


class FeatureWriter(PipelineStep):
    """A global step's `features` for the task's documents, saved as [(key, feature)] for `Decider`."""

    type = "🔻 - TNLM"

    def __init__(self, *, entry: dict[str, Any], folder: str, batch_size: int = 1024) -> None:
        self.name = f"{entry['step']} features"
        super().__init__()
        self.entry, self.folder, self.batch_size = entry, folder, batch_size

    def run(self, data: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        step = build_step(self.entry)
        positions: Counter = Counter()
        keyed: list[tuple[str, Any]] = []
        stream = iter(data)
        while batch := list(islice(stream, self.batch_size)):
            keys = []
            for doc in batch:
                shard = doc.metadata[SHARD_KEY]
                keys.append(f"{shard}:{positions[shard]}")
                positions[shard] += 1
            with self.track_time("batch"):
                keyed += zip(keys, step.features(batch))
            yield from batch
        with atomic_path(Path(self.folder) / f"{rank:05d}.pkl") as tmp:
            tmp.write_bytes(pickle.dumps(keyed))


class Decider(PipelineStep):
    """One task: a global step's `decide` over every task's features, in corpus order; saves the same
    fit file as tnlm's engine."""

    type = "🔻 - TNLM"

    def __init__(self, *, entry: dict[str, Any], folder: str, tasks: int, fit_path: str) -> None:
        self.name = f"{entry['step']} decide"
        super().__init__()
        self.entry, self.folder, self.tasks, self.fit_path = entry, folder, tasks, fit_path

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        step = build_step(self.entry)
        start = time.perf_counter()

        def features() -> Iterator[tuple[str, Any]]:
            for task in range(self.tasks):
                yield from pickle.loads((Path(self.folder) / f"{task:05d}.pkl").read_bytes())

        step.decisions = step.decide(features())
        step.fit_seconds = time.perf_counter() - start
        write_json_atomic(self.fit_path, step.state())
        return iter(())


class CountedFilter(PipelineStep):
    """A datatrove filter (its dedup filters) with tnlm's bookkeeping: documents and bytes in and out,
    time, and each removed document counted under `reason` with a few examples."""

    type = "🫂 - DEDUP"

    def __init__(self, inner: PipelineStep, *, name: str, reason: str, drop_metadata: tuple[str, ...] = ()) -> None:
        self.name = name
        super().__init__()
        self.inner, self.reason, self.drop_metadata = inner, reason, drop_metadata
        self.step_stats: StepStats | None = None

    def run(self, data: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        stats = self.step_stats = StepStats(self.name)
        pending: deque[Document] = deque()
        upstream = [0.0]  # seconds spent reading, not filtering

        def feed() -> Iterator[Document]:
            stream = iter(data)
            while True:
                start = time.perf_counter()
                doc = next(stream, None)
                upstream[0] += time.perf_counter() - start
                if doc is None:
                    return
                stats.docs_in, stats.bytes_in = stats.docs_in + 1, stats.bytes_in + utf8_len(doc.text)
                pending.append(doc)
                yield doc

        kept = iter(self.inner.run(feed(), rank, world_size))
        while True:
            start, before = time.perf_counter(), upstream[0]
            doc = next(kept, None)
            stats.seconds += time.perf_counter() - start - (upstream[0] - before)
            self._removed(stats, pending, until=doc)
            if doc is None:
                return
            for key in self.drop_metadata:
                doc.metadata.pop(key, None)
            stats.docs_out, stats.bytes_out = stats.docs_out + 1, stats.bytes_out + utf8_len(doc.text)
            yield doc

    def _removed(self, stats: StepStats, pending: deque[Document], *, until: Document | None) -> None:
        """Count the documents that went in before `until` came out (all of them when None)."""
        while pending:
            doc = pending.popleft()
            if doc is until:
                return
            stats.reasons[self.reason] += 1
            stats.add_example(doc, self.reason)


class ShardWriter(PipelineStep):
    """Writes each shard of the task's block to its own file (atomically; empty shards too), passes the
    documents on (a later block of the same task may compute the next stage's signatures), and saves the
    statistics of the task's steps, as tnlm's engine does per shard."""

    name = "tnlm writer"
    type = "💽 - WRITER"

    def __init__(self, *, folder: str, suffix: str, n_shards: int, reader: ShardReader | None,
                 counted: list[tuple[str, PipelineStep]]) -> None:
        super().__init__()
        self.folder, self.suffix, self.n_shards = folder, suffix, n_shards
        self.reader, self.counted = reader, counted

    def run(self, data: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        folder = Path(self.folder)
        written = set()
        for shard, docs in groupby(data, key=lambda d: d.metadata[SHARD_KEY]):
            written.add(shard)
            with atomic_path(folder / f"shard-{shard:05d}{self.suffix}") as tmp, open_text(tmp, "w") as f:
                for doc in docs:
                    meta = {k: v for k, v in doc.metadata.items() if k != SHARD_KEY}
                    f.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": meta}, ensure_ascii=False) + "\n")
                    self.stat_update("written")
                    yield doc
        for shard in set(shard_block(self.n_shards, rank, world_size)) - written:
            with atomic_path(folder / f"shard-{shard:05d}{self.suffix}") as tmp, open_text(tmp, "w"):
                pass
        stats = {key: step.step_stats.to_json() for key, step in self.counted}
        if self.reader is not None and self.reader.read_stats is not None:
            stats["read"] = self.reader.read_stats.to_json()
        write_json_atomic(folder / "_stats" / f"task-{rank:05d}.json", stats)
        for _, step in self.counted:  # datatrove saves its executors as JSON, which a Counter key breaks
            step.step_stats = None
        if self.reader is not None:
            self.reader.read_stats = None


class TnlmWords(WordTokenizer):
    """tnlm's dedup words for datatrove's MinHash: lower-cased runs of letters and digits, each CJK
    character one word (`normalized_words`), so both engines shingle the same way."""

    def __init__(self) -> None:
        super().__init__("tnlm")

    def word_tokenize(self, text: str) -> list[str]:
        return normalized_words(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return [line for line in text.split("\n") if line.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans, start = [], 0
        for line in text.split("\n"):
            if line.strip():
                spans.append((start, start + len(line)))
            start += len(line) + 1
        return spans


def exact_content(doc: Document) -> str:
    """What exact dedup compares: the text lower-cased, punctuation and spacing ignored (as ExactDedup)."""
    return " ".join(normalized_words(doc.text))


def corpus_priority(doc: Document) -> int:
    """datatrove keeps the duplicate of highest priority, then of lowest position in its task: earlier
    shards get higher priority, so the first in corpus order is kept (exactly so up to 65,534 shards)."""
    return 65535 - min(int(doc.metadata[SHARD_KEY]), 65534)


DEDUP_COUNTERS = {"total_matches": "duplicate_pairs", "to_remove": "marked_duplicates"}


def datatrove_stats(log_dir: Path, block: str | None) -> tuple[float, Counter]:
    """Seconds and counters of one block (or all) of a datatrove job, summed over its tasks' statistics."""
    seconds, counters = 0.0, Counter()
    for path in sorted((log_dir / "stats").glob("*.json")):
        for row in json.loads(path.read_text(encoding="utf-8")):
            if block is not None and row["name"] != block:
                continue
            seconds += row["time_stats"]["total"] if isinstance(row["time_stats"], dict) else 0.0
            for label, value in (row.get("stats") or {}).items():
                if label in DEDUP_COUNTERS:
                    counters[DEDUP_COUNTERS[label]] += value["total"] if isinstance(value, dict) else value
    return seconds, counters


class ReportBlock(PipelineStep):
    """The last job (one task): time and counters of the dedup steps' own jobs, then report.json from
    every stage's statistics, as tnlm's engine writes it; intermediate documents go unless kept."""

    name = "tnlm report"
    type = "📊 - STATS"

    def __init__(self, *, output: str, stage_folders: list[str], fit_paths: dict[int, str],
                 dedup_logs: dict[int, list[tuple[str, str | None]]], keep_work: bool, suffix: str, n_shards: int) -> None:
        super().__init__()
        self.output, self.stage_folders, self.fit_paths = output, stage_folders, fit_paths
        self.dedup_logs, self.keep_work, self.suffix, self.n_shards = dedup_logs, keep_work, suffix, n_shards

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        from tnlm.data.pipeline import collect_report

        for i, logs in self.dedup_logs.items():
            seconds, counters = 0.0, Counter()
            for log_dir, block in logs:
                more_seconds, more = datatrove_stats(Path(log_dir), block)
                seconds, counters = seconds + more_seconds, counters + more
            write_json_atomic(self.fit_paths[i], {"decisions": None, "fit_seconds": seconds, "fit_counters": dict(counters)})
        report = collect_report(Path(self.output), [Path(f) for f in self.stage_folders],
                                [Path(p) for p in self.fit_paths.values()])
        write_json_atomic(Path(self.output) / "report.json", report.to_json())
        if not self.keep_work:
            for folder in self.stage_folders[:-1]:
                for shard in range(self.n_shards):
                    (Path(folder) / f"shard-{shard:05d}{self.suffix}").unlink(missing_ok=True)
        return iter(())
