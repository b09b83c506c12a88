"""Documents to measure perplexity on: text files, JSON Lines, packed token shards, or a dataset.

`read_documents(source)` accepts
- a .txt (or any text) file: one document, or several split at `separator`;
- a .jsonl / .jsonl.gz file: one document per line, its `text_key` field;
- a folder written by `tnlm data pack` (meta.json + shards): the documents of `split`, as token ids;
- a folder saved by `datasets.Dataset.save_to_disk`, or `hf:NAME[:CONFIG]` (a dataset in the local
  Hugging Face cache or hub), read with `datasets`: its `split`, field `text_key`;
- any other folder: every .txt and .jsonl file below it, in name order.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

from tnlm.errors import ConfigError
from tnlm.evaluation.perplexity import Document


def _jsonl(path: Path, text_key: str) -> Iterator[Document]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {n}: not valid JSON ({e})") from None
            if not isinstance(row, dict) or text_key not in row:
                raise ConfigError(f"{path}, line {n}: no {text_key!r} field; pass the right text key (--text-key)")
            yield Document(text=str(row[text_key]))


def _text(path: Path, separator: str | None) -> Iterator[Document]:
    text = path.read_text(encoding="utf-8")
    pieces = text.split(separator) if separator else [text]
    for piece in pieces:
        if piece.strip():
            yield Document(text=piece)


def _shards(folder: Path, split: str) -> Iterator[Document]:
    from tnlm.data.pack import read_split  # the one reader of tnlm's shard format

    for tokens, ends in read_split(folder, split):
        start = 0
        for end in ends.tolist():
            yield Document(ids=tokens[start:end].astype("int64").tolist())
            start = end


def _dataset(source: str, split: str, text_key: str) -> Iterator[Document]:
    try:
        import datasets
    except ImportError:
        raise ConfigError("reading a dataset needs the datasets package: pip install 'tnlm[data]'") from None
    if source.startswith("hf:"):
        name, _, config = source[3:].partition(":")
        ds = datasets.load_dataset(name, config or None, split=split)
    else:
        ds = datasets.load_from_disk(source)
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise ConfigError(f"{source} has splits {', '.join(ds)}; pass one of them as the split")
            ds = ds[split]
    if text_key not in ds.column_names:
        raise ConfigError(f"the dataset has columns {', '.join(ds.column_names)}; pass the text column as text_key")
    for row in ds:
        yield Document(text=str(row[text_key]))


def _file(path: Path, *, text_key: str, separator: str | None) -> Iterator[Document]:
    if path.name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        return _jsonl(path, text_key)
    return _text(path, separator)


def read_documents(
    source: str | Path, *, text_key: str = "text", split: str = "val", separator: str | None = None
) -> Iterator[Document]:
    """The documents of a file, folder or dataset (see the module docstring)."""
    name = str(source)
    if name.startswith("hf:"):
        return _dataset(name, split, text_key)
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; give a text or .jsonl file, a packed-shard folder, or hf:NAME")
    if path.is_file():
        return _file(path, text_key=text_key, separator=separator)
    if (path / "meta.json").is_file():
        return _shards(path, split)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        return _dataset(name, split, text_key)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith((".txt", ".jsonl", ".jsonl.gz")))
    if not files:
        raise ConfigError(f"{path} holds no .txt or .jsonl files")
    return (doc for f in files for doc in _file(f, text_key=text_key, separator=separator))
