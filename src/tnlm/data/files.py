"""File helpers: compressed text streams, JSON Lines of documents, and atomic writes.

Every output is written to a temporary file in the same folder and renamed into place, so a killed
run leaves either the old file or the complete new one, never a truncated one."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from tnlm import fsutil
from tnlm.data.document import Document
from tnlm.errors import DataError


def compression_of(path: str | Path) -> str | None:
    name = str(path)
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith(".zst") or name.endswith(".zstd"):
        return "zstd"
    return None


def open_binary(path: str | Path, mode: str = "r") -> IO[bytes]:
    """Open a file for reading ("r") or writing ("w") as bytes, (de)compressing by its suffix; reading
    iterates over lines (split at b"\\n")."""
    kind = compression_of(path)
    if kind == "gzip":
        return gzip.open(path, mode + "b")
    if kind == "zstd":
        try:
            import zstandard
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise DataError(f"{path}: reading .zst needs zstandard: pip install 'tnlm[data]'") from err
        raw = open(path, mode + "b")
        if mode == "r":
            return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
        return zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)
    return open(path, mode + "b")


def open_text(path: str | Path, mode: str = "r") -> IO[str]:
    """Open a UTF-8 text file for reading ("r") or writing ("w"), (de)compressing by its suffix."""
    return io.TextIOWrapper(open_binary(path, mode), encoding="utf-8")


def atomic_path(path: str | Path):
    """fsutil.atomic_path, the temporary name keeping a compression suffix, so that open_text() on the
    temporary path picks the right codec."""
    codec_suffix = Path(path).suffix if compression_of(path) else ""
    return fsutil.atomic_path(path, suffix=".tmp" + codec_suffix)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: object) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_documents(path: str | Path, docs: Iterable[Document]) -> int:
    """Write documents as JSON Lines (compressed by suffix), atomically. Returns how many."""
    n = 0
    with atomic_path(path) as tmp, open_text(tmp, "w") as f:
        for doc in docs:
            f.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
            n += 1
    return n


def read_documents(path: str | Path) -> Iterator[Document]:
    """Read documents written by `write_documents`."""
    with open_text(path) as f:
        for line in f:
            if line.strip():
                yield Document.from_json(json.loads(line))
