"""Tokenise documents and write memory-mapped token shards.

For each input shard: documents are tokenised in batches by the Rust tokenizer (all cores), an EOS
token is appended to each, and the tokens go to `{split}-{shard}.bin` (uint16 when the vocabulary fits,
else uint32) with the document end offsets in `{split}-{shard}.idx.npy`. A document goes to the
validation split when its id hashes below `val_fraction`. Each shard's metadata file, written last,
marks it done, so an interrupted run resumes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from tnlm.data.document import Document
from tnlm.data.files import DataError, atomic_path, write_json_atomic
from tnlm.data.sources import FileSource
from tnlm.data.text import stable_hash

SPLITS = ("train", "val")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def is_validation(doc_id: str, val_fraction: float) -> bool:
    return stable_hash(doc_id) % 1_000_000 < val_fraction * 1_000_000


def _load_tokenizer(path: str | Path) -> Tokenizer:
    file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise DataError(f"no tokenizer at {path}: give a folder with tokenizer.json (tnlm tokenizer train makes one)")
    return Tokenizer.from_file(str(file))


def _write_split(folder: Path, name: str, chunks: list[np.ndarray], dtype: np.dtype) -> int:
    tokens = np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)
    ends = np.cumsum([len(c) for c in chunks], dtype=np.int64)
    with atomic_path(folder / f"{name}.bin") as tmp:
        tokens.tofile(tmp)
    with atomic_path(folder / f"{name}.idx.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, ends)
    return len(tokens)


def pack_shard(docs: Iterable[Document], tokenizer: Tokenizer, *, folder: Path, shard: int, eos_id: int,
               val_fraction: float, batch_size: int = 256) -> dict[str, list[int]]:
    """Tokenise one shard; returns {split: [documents, tokens]}."""
    dtype = token_dtype(tokenizer.get_vocab_size())
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    docs = iter(docs)
    while batch := list(islice(docs, batch_size)):
        encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings):
            split = "val" if is_validation(doc.id, val_fraction) else "train"
            chunks[split].append(np.array(enc.ids + [eos_id], dtype=np.int64))
    return {s: [len(chunks[s]), _write_split(folder, f"{s}-{shard:05d}", chunks[s], dtype)] for s in SPLITS}


def pack(inputs: list[str], tokenizer_path: str | Path, output: str | Path, *, val_fraction: float = 0.01,
         text_key: str = "text", progress: bool = True) -> dict:
    """Pack documents from files (e.g. a pipeline's output folder) into token shards under `output`."""
    tokenizer = _load_tokenizer(tokenizer_path)
    eos_id = tokenizer.token_to_id("</s>")
    if eos_id is None:
        raise DataError("the tokenizer has no </s> token to end documents with")
    source = FileSource(paths=inputs, text_key=text_key)
    folder = Path(output)
    for shard, path in enumerate(tqdm(source.shards(), desc="pack", disable=not progress)):
        marker = folder / f"shard-{shard:05d}.json"
        if marker.exists():
            continue
        counts = pack_shard(source.read(path), tokenizer, folder=folder, shard=shard, eos_id=eos_id,
                            val_fraction=val_fraction)
        write_json_atomic(marker, {"input": path, "counts": counts})
    return _write_meta(folder, tokenizer, eos_id, len(source.shards()), tokenizer_path)


def _write_meta(folder: Path, tokenizer: Tokenizer, eos_id: int, n_shards: int, tokenizer_path: str | Path) -> dict:
    totals = {s: {"documents": 0, "tokens": 0} for s in SPLITS}
    for shard in range(n_shards):
        counts = json.loads((folder / f"shard-{shard:05d}.json").read_text())["counts"]
        for s in SPLITS:
            totals[s]["documents"] += counts[s][0]
            totals[s]["tokens"] += counts[s][1]
    if totals["train"]["tokens"] == 0:
        raise DataError("no tokens were written: the inputs have no documents with text")
    meta = {"dtype": token_dtype(tokenizer.get_vocab_size()).name, "vocab_size": tokenizer.get_vocab_size(),
            "eos_id": eos_id, "num_shards": n_shards, "tokenizer": str(tokenizer_path), "splits": totals}
    write_json_atomic(folder / "meta.json", meta)
    return meta


def read_split(folder: str | Path, split: str = "train") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens memmap, document end offsets) of each shard of a split."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{folder} has no meta.json: pack data there first (tnlm data pack)")
    meta = json.loads(meta_path.read_text())
    for shard in range(meta["num_shards"]):
        name = f"{split}-{shard:05d}"
        ends = np.load(folder / f"{name}.idx.npy")
        if len(ends) and ends[-1] > 0:
            yield np.memmap(folder / f"{name}.bin", dtype=meta["dtype"], mode="r"), ends
