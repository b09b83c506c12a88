"""Where documents come from: local files (text, JSON Lines, JSON, Parquet; .gz/.zst), Hugging Face
datasets, and a built-in corpus that every Python installation has (the standard library's docs and
source). A source splits itself into shards (`shards()`), and `read(shard)` yields the documents of
one shard, so shards can be processed in parallel and resumed one by one."""

from __future__ import annotations

import ast
import gc
import json
import os
import sysconfig
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.files import open_binary
from tnlm.data.paths import base_suffix, check_not_reading, expand_paths
from tnlm.data.step import StepStats
from tnlm.data.text import utf8_len

TEXT_SUFFIXES = (".txt", ".md", ".text", ".rst", ".py")
JSONL_SUFFIXES = (".jsonl", ".ndjson")
KNOWN_SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES + (".json", ".parquet")


class Source:
    """Base class: counts what it read and what it had to skip. A record it cannot turn into a document
    (a malformed line, one that is not UTF-8, one without text) counts as a document in and a removal
    with its reason, so the read step's row accounts for it like any step's; a file it cannot read at
    all counts in `unreadable_files`."""

    type: str = "source"

    def __init__(self) -> None:
        self.stats = StepStats("read")

    def shards(self) -> list[str]:
        raise NotImplementedError

    def read(self, shard: str) -> Iterator[Document]:
        raise NotImplementedError

    def shard_bytes(self, shards: list[str]) -> list[int]:
        """About how many bytes each shard reads (0: unknown); the executor starts the largest first."""
        return [0] * len(shards)

    def documents(self, shards: list[str] | None = None) -> Iterator[Document]:
        """Every document of the source (or of the given shards), shard after shard."""
        for shard in self.shards() if shards is None else shards:
            yield from self.read(shard)

    def emit(self, doc: Document) -> Document:
        self.stats.docs_in += 1
        self.stats.docs_out += 1
        nbytes = utf8_len(doc.text)
        self.stats.bytes_in += nbytes
        self.stats.bytes_out += nbytes
        return doc

    def skip(self, reason: str, where: str, nbytes: int = 0) -> None:
        """Count a record that yields no document."""
        self.stats.docs_in += 1
        self.stats.bytes_in += nbytes
        self.stats.reasons[reason] += 1
        self._example(where, reason)

    def unreadable(self, where: str, err: BaseException) -> None:
        """Count a file (or the rest of one) that cannot be read at all."""
        self.stats.counters["unreadable_files"] += 1
        self._example(f"{where}: {type(err).__name__}: {err}", "unreadable_file")

    def _example(self, where: str, reason: str) -> None:
        if len(self.stats.examples) < 5:
            self.stats.examples.append({"id": where, "reason": reason, "text": ""})

    def check_output(self, folder: str | Path, samples: list[str]) -> None:
        """Refuse an output folder this source would read from, once it holds files named like `samples`
        (only local files can; other sources accept any folder)."""


def _text_of(row: dict[str, Any], key: str) -> str | None:
    value = row.get(key)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # e.g. poems stored as a list of lines
    return value if isinstance(value, str) else None


class FileSource(Source):
    """Local files. Text files give one document per file, or one per `delimiter`-separated part;
    JSON Lines give one per line; JSON lists and Parquet one per row. A document's id is its `id_key`
    field when present, else "file:index". Each file is one shard, or `split_files` shards (shard k
    takes every k-th document) so big files still spread over the workers.

    Which files `paths` names: see `tnlm.data.paths` (existing paths are literal, wildcards expand).
    Nothing is dropped without a count: a line that is not a JSON object is skipped as
    "malformed_lines" (a JSON list's row as "malformed_rows"), a record without a string `text_key` as
    "missing_text", and a line (or text part) that is not valid UTF-8 as "invalid_utf8", or, with
    `encoding_errors="replace"`, kept with U+FFFD in place of the bad bytes and counted in
    "repaired_utf8"; the lines around it are kept. A file that cannot be read counts in
    "unreadable_files" (a JSON list with a bad byte is one, unless repaired)."""

    type = "files"

    def __init__(self, *, paths: list[str] | str, text_key: str = "text", id_key: str | None = "id",
                 delimiter: str | None = None, split_files: int = 1, encoding_errors: str = "skip") -> None:
        super().__init__()
        self.patterns = [paths] if isinstance(paths, str) else list(paths)
        self.paths = expand_paths(self.patterns, suffixes=KNOWN_SUFFIXES)
        self.text_key, self.id_key, self.delimiter = text_key, id_key, delimiter
        if split_files < 1:
            raise DataError("split_files must be 1 or more")
        if encoding_errors not in ("skip", "replace"):
            raise DataError(f"encoding_errors must be skip or replace, not {encoding_errors!r}")
        self.split_files, self.encoding_errors = split_files, encoding_errors
        self._count_skips = True

    def check_output(self, folder: str | Path, samples: list[str]) -> None:
        check_not_reading(self.patterns, folder, samples)

    def shards(self) -> list[str]:
        if self.split_files == 1:
            return list(self.paths)
        return [f"{path}::{k}/{self.split_files}" for path in self.paths for k in range(self.split_files)]

    def shard_bytes(self, shards: list[str]) -> list[int]:
        sizes = []
        for shard in shards:
            path, _, spec = shard.rpartition("::") if "::" in shard else (shard, "", "1/1")
            try:
                sizes.append(os.path.getsize(path) // int(spec.split("/")[1]))
            except OSError:
                sizes.append(0)
        return sizes

    def read(self, shard: str) -> Iterator[Document]:
        path, part, parts = shard, 0, 1
        if "::" in shard:
            path, spec = shard.rsplit("::", 1)
            part, parts = (int(x) for x in spec.split("/"))
        self._count_skips = part == 0  # every part sees the same bad lines; count them once
        reader = {".parquet": self._read_parquet, ".json": self._read_json}.get(base_suffix(path))
        if reader is None:
            reader = self._read_jsonl if base_suffix(path) in JSONL_SUFFIXES else self._read_text
        try:
            for i, doc in enumerate(reader(path)):
                if i % parts == part:
                    yield self.emit(doc)
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as err:
            if self._count_skips:
                self.unreadable(path, err)

    def skip(self, reason: str, where: str, nbytes: int = 0) -> None:
        if self._count_skips:
            super().skip(reason, where, nbytes)

    def _decode(self, raw: bytes, where: str) -> str | None:
        """UTF-8 text of a line or part; None (counted) when it is not UTF-8 and is not to be repaired."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            if self.encoding_errors == "skip":
                self.skip("invalid_utf8", where, len(raw))
                return None
            if self._count_skips:
                self.stats.counters["repaired_utf8"] += 1
            return raw.decode("utf-8", errors="replace")

    def _doc(self, row: dict[str, Any], shard: str, index: int, nbytes: int = 0) -> Document | None:
        text = _text_of(row, self.text_key)
        if text is None:
            self.skip("missing_text", f"{shard}:{index + 1}", nbytes)
            return None
        doc_id = str(row[self.id_key]) if self.id_key and self.id_key in row else f"{shard}:{index}"
        meta = {k: v for k, v in row.items() if k not in (self.text_key, self.id_key, "metadata")}
        nested = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        return Document(text=text, id=doc_id, metadata={"source": shard, **nested, **meta})

    def _read_text(self, shard: str) -> Iterator[Document]:
        with open_binary(shard) as f:
            data = f.read()
        parts = data.split(self.delimiter.encode("utf-8")) if self.delimiter else [data]
        for i, raw in enumerate(parts):
            if raw.strip() and (part := self._decode(raw, f"{shard}:{i}")) is not None:
                yield Document(text=part.strip("\n"), id=f"{shard}:{i}", metadata={"source": shard})

    def _read_jsonl(self, shard: str) -> Iterator[Document]:
        with open_binary(shard) as f:
            for i, raw in enumerate(f):
                if not raw.strip() or (line := self._decode(raw, f"{shard}:{i + 1}")) is None:
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
                if not isinstance(row, dict):
                    self.skip("malformed_lines", f"{shard}:{i + 1}", len(raw))  # lines count from 1
                elif (doc := self._doc(row, shard, i, len(raw))) is not None:
                    yield doc

    def _read_json(self, shard: str) -> Iterator[Document]:
        with open_binary(shard) as f:  # one JSON value: a bad byte makes the file unreadable unless repaired
            rows = json.loads(f.read().decode("utf-8", errors="strict" if self.encoding_errors == "skip" else "replace"))
        if isinstance(rows, dict):
            rows = [rows]
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                self.skip("malformed_rows", f"{shard}:{i}")
            elif (doc := self._doc(row, shard, i)) is not None:
                yield doc

    def _read_parquet(self, shard: str) -> Iterator[Document]:
        import pyarrow.parquet as pq

        index = 0
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                if (doc := self._doc(row, shard, index)) is not None:
                    yield doc
                index += 1


class HFSource(Source):
    """A Hugging Face dataset, streamed; the dataset's own file shards become tnlm shards."""

    type = "hf"

    def __init__(self, *, path: str, name: str | None = None, split: str = "train",
                 data_files: Any = None, text_key: str = "text", num_shards: int | None = None) -> None:
        super().__init__()
        self.kwargs = {"path": path, "name": name, "split": split, "data_files": data_files}
        self.text_key, self.num_shards = text_key, num_shards

    def _dataset(self) -> Any:
        import datasets

        try:
            return datasets.load_dataset(**self.kwargs, streaming=True)
        except (FileNotFoundError, ValueError) as err:
            raise DataError(f"cannot load dataset {self.kwargs['path']!r}: {err}") from err

    def shards(self) -> list[str]:
        available = self._dataset().num_shards
        n = min(self.num_shards or available, available)
        return [f"{i}/{n}" for i in range(n)]

    def read(self, shard: str) -> Iterator[Document]:
        index, total = (int(x) for x in shard.split("/"))
        part = self._dataset().shard(num_shards=total, index=index)
        for i, row in enumerate(part):
            text = _text_of(row, self.text_key)
            if text is None:
                self.skip("missing_text", f"{self.kwargs['path']}[{shard}]:{i}")
                continue
            meta = {k: v for k, v in row.items() if k != self.text_key and isinstance(v, (str, int, float))}
            yield self.emit(Document(text=text, id=f"{self.kwargs['path']}:{shard}:{i}", metadata=meta))


@lru_cache(maxsize=1)
def stdlib_files() -> list[Path]:
    """The Python standard library's own .py files (not site-packages, not its test suite)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = {"site-packages", "dist-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        files.extend(Path(folder) / n for n in sorted(names) if n.endswith(".py"))
    return files


@contextmanager
def _gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside the block: parsing a module allocates a million tree nodes,
    none of them in a cycle, and the collections they trigger take two thirds of the parse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


DEFINITIONS = (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)
BLOCKS = (ast.stmt, ast.excepthandler, ast.match_case)  # what can hold a def; expressions cannot


def _definitions(tree: ast.Module) -> list[ast.AST]:
    """The module, then its function and class definitions in `ast.walk`'s breadth-first order, walking
    statements only (a definition is never inside an expression): the same nodes in the same order as
    `_definitions_reference`, without visiting the expressions, most of the tree."""
    nodes, level = [tree], [tree]
    while level:
        level = [child for node in level for name in node._fields if type(value := getattr(node, name, None)) is list
                 for child in value if isinstance(child, BLOCKS)]
        nodes.extend(level)
    return [n for n in nodes if isinstance(n, DEFINITIONS)]


def _definitions_reference(tree: ast.Module) -> list[ast.AST]:
    return [tree] + [n for n in ast.walk(tree) if isinstance(n, DEFINITIONS[1:])]


def _topics_bytes() -> int:
    from pydoc_data.topics import topics

    return sum(len(text) for text in topics.values())


def _docstrings(path: Path) -> str:
    try:
        source = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, ValueError):
        return ""
    with _gc_paused():  # until the tree is freed: a collection on the way out would walk all of it
        return _module_docstrings(source)


def _module_docstrings(source: str) -> str:
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ""
    return "\n\n".join(d for n in _definitions(tree) if (d := ast.get_docstring(n)))


class BuiltinSource(Source):
    """The built-in corpus: Python's help topics and the standard library's docstrings ("docs"), its
    source files ("source"), or both ("all"). Present on every machine, no download."""

    type = "builtin"

    def __init__(self, *, kind: str = "docs", num_shards: int = 8, max_files: int | None = None) -> None:
        super().__init__()
        if kind not in ("docs", "source", "all"):
            raise DataError(f"builtin kind must be docs, source or all, not {kind!r}")
        self.kind, self.num_shards, self.max_files = kind, num_shards, max_files

    def shards(self) -> list[str]:
        return [f"{i}/{self.num_shards}" for i in range(self.num_shards)]

    @cached_property
    def _assignment(self) -> tuple[list[list[Path]], list[int]]:
        """The standard-library files of each shard, and each shard's bytes (worked out once per source
        object: forked workers inherit it). Files are dealt out largest first, each to the shard with the
        fewest bytes so far (shard 0 starts with the help topics), and keep the library's order within a
        shard: equal shards keep every worker busy to the end of a stage."""
        total = self.num_shards
        topics = _topics_bytes() if self.kind in ("docs", "all") else 0
        files = stdlib_files()[: self.max_files]
        sizes = [path.stat().st_size for path in files]
        loads, members = [topics] + [0] * (total - 1), [[] for _ in range(total)]
        for i in sorted(range(len(files)), key=lambda i: -sizes[i]):
            shard = loads.index(min(loads))
            loads[shard] += sizes[i]
            members[shard].append(i)
        return [[files[i] for i in sorted(m)] for m in members], loads

    def shard_bytes(self, shards: list[str]) -> list[int]:
        return self._assignment[1]

    def read(self, shard: str) -> Iterator[Document]:
        index = int(shard.split("/")[0])
        if index == 0 and self.kind in ("docs", "all"):
            from pydoc_data.topics import topics

            for name in sorted(topics):
                yield self.emit(Document(text=topics[name], id=f"pydoc:{name}", metadata={"source": "pydoc"}))
        root = Path(sysconfig.get_paths()["stdlib"])
        for path in self._assignment[0][index]:
            name = path.relative_to(root).as_posix()
            if self.kind in ("docs", "all") and (text := _docstrings(path)):
                yield self.emit(Document(text=text, id=f"docstrings:{name}", metadata={"source": "stdlib-docstrings"}))
            if self.kind in ("source", "all"):
                text = path.read_text(encoding="utf-8", errors="replace")
                yield self.emit(Document(text=text, id=f"source:{name}", metadata={"source": "stdlib-source"}))


SOURCES: dict[str, type[Source]] = {cls.type: cls for cls in (FileSource, HFSource, BuiltinSource)}


def build_source(config: dict[str, Any]) -> Source:
    """Build a source from its config, e.g. `{"type": "files", "paths": ["data/*.jsonl"]}`."""
    options = dict(config)
    kind = options.pop("type", "files")
    if kind not in SOURCES:
        raise DataError(f"unknown source type {kind!r}; choose one of {sorted(SOURCES)}")
    try:
        return SOURCES[kind](**options)
    except TypeError as err:
        raise DataError(f"bad options for source {kind!r}: {err}") from err
