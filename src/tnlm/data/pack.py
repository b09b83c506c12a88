"""Tokenise documents and write memory-mapped token shards.

For each input shard: documents are tokenised in batches by the Rust tokenizer (all cores), an EOS
token is appended to each, and the tokens go to `{split}-{shard}.bin` (uint16 when the tokenizer's
largest id fits, else uint32) with the document end offsets in `{split}-{shard}.idx.npy`. A document
goes to the validation split when its id hashes below `val_fraction`. Each shard's marker file
(`shard-NNNNN.json`: its input, counts and largest token id), written last, marks it done, so an
interrupted run resumes.

A folder holds one packing: `pack.json`, written before the first shard, records the tokenizer (a
SHA-256 of its definition) and the settings. A rerun or resumption with another tokenizer, other
settings or other inputs is refused (`overwrite=True` deletes the old shards and starts fresh), and
`read_split` checks every shard against `meta.json` before handing it to a loader."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.files import atomic_path, write_json_atomic
from tnlm.fsutil import remove_unfinished
from tnlm.data.lock import LOCK_NAME, folder_lock
from tnlm.data.paths import PACK_MARKER
from tnlm.data.sources import FileSource
from tnlm.data.text import stable_hash

SPLITS = ("train", "val")
OWN_PATTERNS = (PACK_MARKER, "meta.json", "shard-[0-9]*.json", *(f"{s}-[0-9]*{ext}" for s in SPLITS for ext in (".bin", ".idx.npy")))


def token_dtype(max_id: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id up to `max_id`."""
    return np.dtype(np.uint16) if max_id < 1 << 16 else np.dtype(np.uint32)


def is_validation(doc_id: str, val_fraction: float) -> bool:
    return stable_hash(doc_id) % 1_000_000 < val_fraction * 1_000_000


def _load_tokenizer(path: str | Path) -> Tokenizer:
    file = Path(path) / "tokenizer.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise DataError(f"no tokenizer at {path}: give a folder with tokenizer.json (tnlm tokenizer train makes one)")
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # tokenizers raises bare Exceptions for a damaged file
        raise DataError(f"{file} cannot be read ({' '.join(str(err).split())[:200]}): restore it, or train a new "
                        "tokenizer with `tnlm tokenizer train`") from None


def tokenizer_record(tokenizer: Tokenizer, path: str | Path) -> dict[str, Any]:
    """What identifies a tokenizer: a hash of its full definition, and its largest id."""
    return {"tokenizer": str(path), "tokenizer_sha256": hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest(),
            "max_id": max(tokenizer.get_vocab(with_added_tokens=True).values())}


def _write_split(folder: Path, name: str, chunks: list[np.ndarray], dtype: np.dtype) -> tuple[int, int]:
    """Write one split of one shard; returns (tokens, largest id or -1)."""
    tokens = np.concatenate(chunks).astype(dtype) if chunks else np.zeros(0, dtype=dtype)
    ends = np.cumsum([len(c) for c in chunks], dtype=np.int64)
    with atomic_path(folder / f"{name}.bin") as tmp:
        tokens.tofile(tmp)
    with atomic_path(folder / f"{name}.idx.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, ends)
    return len(tokens), int(tokens.max()) if len(tokens) else -1


def pack_shard(docs: Iterable[Document], tokenizer: Tokenizer, *, folder: Path, shard: int, eos_id: int,
               val_fraction: float, dtype: np.dtype, batch_size: int = 256) -> dict[str, dict[str, int]]:
    """Tokenise one shard; returns {split: {documents, tokens, max_id}}."""
    chunks: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    docs = iter(docs)
    while batch := list(islice(docs, batch_size)):
        encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings):
            split = "val" if is_validation(doc.id, val_fraction) else "train"
            chunks[split].append(np.array(enc.ids + [eos_id], dtype=np.int64))
    counts = {}
    for s in SPLITS:
        n_tokens, max_id = _write_split(folder, f"{s}-{shard:05d}", chunks[s], dtype)
        counts[s] = {"documents": len(chunks[s]), "tokens": n_tokens, "max_id": max_id}
    return counts


def pack(inputs: list[str], tokenizer_path: str | Path, output: str | Path, *, val_fraction: float = 0.01,
         text_key: str = "text", progress: bool = True, overwrite: bool = False) -> dict:
    """Pack documents from files (e.g. a pipeline's output folder) into token shards under `output`.
    Resumes an interrupted packing of the same inputs with the same tokenizer and settings; refuses
    anything else unless `overwrite`, which deletes the folder's old shards first."""
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction {val_fraction} must be at least 0 and below 1: it is the share of documents "
                        "held out for validation (e.g. 0.01); the rest are the training tokens")
    tokenizer = _load_tokenizer(tokenizer_path)
    eos_id = tokenizer.token_to_id("</s>")
    if eos_id is None:
        raise DataError("the tokenizer has no </s> token to end documents with")
    source = FileSource(paths=inputs, text_key=text_key)
    folder = Path(output)
    source.check_output(folder, samples=["shard-00000.json", PACK_MARKER])
    settings = {**tokenizer_record(tokenizer, tokenizer_path), "eos_id": eos_id, "val_fraction": val_fraction,
                "text_key": text_key, "inputs": source.shards()}
    with folder_lock(folder):
        _claim(folder, settings, overwrite=overwrite)
        for shard, path in enumerate(tqdm(source.shards(), desc="pack", disable=not progress)):
            marker = folder / f"shard-{shard:05d}.json"
            if marker.exists():
                continue
            counts = pack_shard(source.read(path), tokenizer, folder=folder, shard=shard, eos_id=eos_id,
                                val_fraction=val_fraction, dtype=token_dtype(settings["max_id"]))
            write_json_atomic(marker, {"input": path, "counts": counts})
        return _write_meta(folder, settings)


def _own_files(folder: Path) -> list[Path]:
    return sorted({p for pattern in OWN_PATTERNS for p in folder.glob(pattern)})


def _claim(folder: Path, settings: dict[str, Any], *, overwrite: bool) -> None:
    """Make `folder` this packing's: new, resumed with identical settings, or (overwrite) emptied."""
    if overwrite:
        for path in _own_files(folder):
            path.unlink()
    record = folder / PACK_MARKER
    if not record.exists():
        remove_unfinished(record)  # a packing killed while writing its marker leaves only that
        if any(p.name != LOCK_NAME for p in folder.iterdir()):
            raise DataError(f"{folder} is not empty and holds no tnlm packing (no {PACK_MARKER}): give an empty or "
                            "new folder, or pass --overwrite to replace the packed shards in it")
        write_json_atomic(record, settings)
        return
    previous = json.loads(record.read_text(encoding="utf-8"))
    if previous["tokenizer_sha256"] != settings["tokenizer_sha256"]:
        raise DataError(f"{folder} was packed with another tokenizer ({previous['tokenizer']}): pass --overwrite "
                        "to repack it from scratch with this one, or use a new folder")
    changed = [k for k in ("val_fraction", "text_key", "inputs", "eos_id") if previous[k] != settings[k]]
    if changed:
        raise DataError(f"{folder} was packed with other {', '.join(changed)}: rerun with the same settings to "
                        "resume, or pass --overwrite to repack from scratch")


def _write_meta(folder: Path, settings: dict[str, Any]) -> dict:
    totals = {s: {"documents": 0, "tokens": 0} for s in SPLITS}
    n_shards = len(settings["inputs"])
    for shard in range(n_shards):
        counts = json.loads((folder / f"shard-{shard:05d}.json").read_text())["counts"]
        for s in SPLITS:
            totals[s]["documents"] += counts[s]["documents"]
            totals[s]["tokens"] += counts[s]["tokens"]
    if totals["train"]["tokens"] == 0 and totals["val"]["documents"]:
        raise DataError(f"all {totals['val']['documents']} documents went to the validation split: lower "
                        f"--val-fraction (now {settings['val_fraction']}) or pack more documents")
    if totals["train"]["tokens"] == 0:
        raise DataError("no tokens were written: the inputs have no documents with text")
    meta = {"dtype": token_dtype(settings["max_id"]).name, "vocab_size": settings["max_id"] + 1,
            "eos_id": settings["eos_id"], "num_shards": n_shards, "tokenizer": settings["tokenizer"],
            "tokenizer_sha256": settings["tokenizer_sha256"], "splits": totals}
    write_json_atomic(folder / "meta.json", meta)
    return meta


def _checked_shard(folder: Path, meta: dict[str, Any], shard: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A shard's tokens and ends, after checking them against meta.json: the file holds exactly the
    indexed number of tokens of meta's dtype, and no id reaches meta's vocab_size."""
    name = f"{split}-{shard:05d}"
    ends = np.load(folder / f"{name}.idx.npy")
    dtype = np.dtype(meta["dtype"])
    n_tokens = int(ends[-1]) if len(ends) else 0
    size = (folder / f"{name}.bin").stat().st_size
    if size != n_tokens * dtype.itemsize:
        raise DataError(f"{folder}/{name}.bin holds {size} bytes, not {n_tokens} tokens of {dtype.name}: the folder mixes "
                        "packings; repack it (tnlm data pack --overwrite)")
    tokens = np.memmap(folder / f"{name}.bin", dtype=dtype, mode="r", shape=(n_tokens,)) if n_tokens else np.zeros(0, dtype)
    counts = json.loads((folder / f"shard-{shard:05d}.json").read_text())["counts"][split]
    max_id = counts["max_id"] if isinstance(counts, dict) else (int(tokens.max()) if n_tokens else -1)
    if max_id >= meta["vocab_size"]:
        raise DataError(f"{folder}/{name} holds token ids up to {max_id}, beyond the folder's vocab_size "
                        f"{meta['vocab_size']}: it was packed with another tokenizer; repack (tnlm data pack --overwrite)")
    return tokens, ends


def read_split(folder: str | Path, split: str = "train") -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(tokens memmap, document end offsets) of each non-empty shard of a split, checked against meta.json."""
    folder = Path(folder)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{folder} has no meta.json: pack data there first (tnlm data pack)")
    meta = json.loads(meta_path.read_text())
    shards = [_checked_shard(folder, meta, shard, split) for shard in range(meta["num_shards"])]
    yield from ((tokens, ends) for tokens, ends in shards if len(ends) and ends[-1] > 0)
