"""The base classes every data step derives from.

A step is a generator `run(docs, rank, world_size)`, the shape datatrove uses, so the same step runs
in tnlm's own executor and inside a datatrove pipeline. The base class owns the bookkeeping (documents
and bytes in and out, time, removal reasons and a few removed examples) so a concrete step only says
what it does to one document."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, ClassVar

from tnlm.data.document import Document
from tnlm.data.text import utf8_len

MAX_EXAMPLES = 5
EXAMPLE_CHARS = 200


@dataclass
class StepStats:
    """Counters of one step; `merge` adds the counters of the same step run on another shard."""

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    reasons: Counter = field(default_factory=Counter)
    counters: Counter = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)

    @property
    def removed(self) -> int:
        return self.docs_in - self.docs_out

    def add_example(self, doc: Document, reason: str) -> None:
        """Keep a removed document's id and start (PII masked, whatever the steps mask) for the report."""
        if len(self.examples) < MAX_EXAMPLES:
            from tnlm.data.pii import masked_excerpt  # pii's masker is itself a step

            self.examples.append({"id": masked_excerpt(doc.id, EXAMPLE_CHARS), "reason": reason,
                                  "text": masked_excerpt(doc.text, EXAMPLE_CHARS)})

    def merge(self, other: StepStats) -> None:
        for key in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        self.reasons.update(other.reasons)
        self.counters.update(other.counters)
        self.examples.extend(other.examples[: MAX_EXAMPLES - len(self.examples)])

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name, "docs_in": self.docs_in, "docs_out": self.docs_out, "removed": self.removed,
            "bytes_in": self.bytes_in, "bytes_out": self.bytes_out, "seconds": round(self.seconds, 4),
            "reasons": dict(self.reasons), "counters": dict(self.counters), "examples": self.examples,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> StepStats:
        fields = {k: row[k] for k in ("name", "docs_in", "docs_out", "bytes_in", "bytes_out", "seconds")}
        return cls(**fields, reasons=Counter(row["reasons"]), counters=Counter(row["counters"]),
                   examples=list(row["examples"]))


class Step:
    """Base of all steps. Subclasses set `name` and override `process` (or use Filter/Mapper)."""

    name: ClassVar[str] = "step"

    def __init__(self) -> None:
        self.stats = StepStats(self.name)

    def process(self, doc: Document) -> Document | None:
        """Return the (possibly changed) document, or None to remove it (after calling `self.drop`)."""
        raise NotImplementedError

    def drop(self, doc: Document, reason: str) -> None:
        self.stats.reasons[reason] += 1
        self.stats.add_example(doc, reason)

    def count(self, key: str, value: int = 1) -> None:
        self.stats.counters[key] += value

    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        for doc in docs:
            if (out := self.counted(self.process, doc)) is not None:
                yield out

    def counted(self, process: Callable[[Document], Document | None], doc: Document) -> Document | None:
        """`process(doc)`, with the document, its bytes and the time counted in and out."""
        stats = self.stats
        stats.docs_in += 1
        stats.bytes_in += utf8_len(doc.text)
        start = time.perf_counter()
        out = process(doc)
        stats.seconds += time.perf_counter() - start
        if out is not None:
            stats.docs_out += 1
            stats.bytes_out += utf8_len(out.text)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Filter(Step):
    """A step that keeps or removes documents unchanged: override `reject_reason`."""

    def reject_reason(self, doc: Document) -> str | None:
        """The reason to remove `doc` (a short snake_case label), or None to keep it."""
        raise NotImplementedError

    def process(self, doc: Document) -> Document | None:
        reason = self.reject_reason(doc)
        if reason is None:
            return doc
        self.drop(doc, reason)
        return None


class Mapper(Step):
    """A step that rewrites each document's text: override `transform`; an empty result removes it."""

    def transform(self, text: str) -> str:
        raise NotImplementedError

    def process(self, doc: Document) -> Document | None:
        new = self.transform(doc.text)
        if new != doc.text:
            self.count("docs_changed")
        if not new.strip():
            self.drop(doc, "empty_after_" + self.name)
            return None
        doc.text = new
        return doc


class GlobalStep(Step):
    """A step whose decisions need every document first (deduplication, a perplexity quantile).

    It works in two parts: `features` computes what the decision needs from each document (a hash,
    a MinHash signature, a score); the executor runs it shard by shard in parallel. `decide` then
    walks all features in corpus order, keyed "shard:position", and names the documents to remove.
    The decisions are saved, and `run(docs, rank=shard)` removes those documents shard by shard, so
    that phase parallelises and resumes like any other step. `features` must give each document's
    value from that document alone: the executor computes them in the pass that writes the documents."""

    # whether the executor may compute this step's features in the same pass as an earlier global
    # step's, over documents that step may then remove: true where features cost little (hashes)
    cheap_features: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.decisions: dict[str, str] | None = None
        self.fit_seconds = 0.0

    def features(self, docs: list[Document]) -> list[Any]:
        """One picklable value per document: what `decide` needs to know about it."""
        raise NotImplementedError

    def decide(self, features: Iterable[tuple[str, Any]]) -> dict[str, str]:
        """Map the key of every document to remove to the reason for removing it."""
        raise NotImplementedError

    def fit(self, docs: Iterable[tuple[str, Document]], *, batch_size: int = 1024) -> None:
        """`features` then `decide` in this process (the executor spreads `features` over workers)."""
        start = time.perf_counter()

        def keyed_features() -> Iterator[tuple[str, Any]]:
            stream = iter(docs)
            while batch := list(islice(stream, batch_size)):
                yield from zip([key for key, _ in batch], self.features([doc for _, doc in batch]))

        self.decisions = self.decide(keyed_features())
        self.fit_seconds = time.perf_counter() - start

    def state(self) -> dict[str, Any]:
        return {"decisions": self.decisions, "fit_seconds": self.fit_seconds, "fit_counters": dict(self.stats.counters)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.decisions = dict(state["decisions"])

    def run(self, docs: Iterable[Document], rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        if self.decisions is None:
            raise RuntimeError(f"{self.name}: call fit() or load_state() before run()")

        for position, doc in enumerate(docs):
            if (out := self.counted(partial(self.apply_decision, key=f"{rank}:{position}"), doc)) is not None:
                yield out

    def apply_decision(self, doc: Document, *, key: str) -> Document | None:
        """Remove the document whose key ("shard:position") the fit decided to remove."""
        reason = self.decisions.get(key) if self.decisions else None
        if reason is None:
            return doc
        self.drop(doc, reason)
        return None

    def process(self, doc: Document) -> Document | None:
        raise TypeError(f"{self.name} decides by the document's key: use run() or apply_decision(doc, key=...)")
