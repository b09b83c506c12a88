"""Benchmark decontamination: remove training documents that share a word n-gram with an
evaluation item. Evaluation files are JSON Lines or JSON; every string field of an item with at
least `min_item_words` words is indexed (questions, answers, passages), or only `fields` if given.
An item shorter than `ngram` words is matched whole, so short questions still count."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.files import open_text
from tnlm.data.paths import expand_paths
from tnlm.data.sources import KNOWN_SUFFIXES
from tnlm.data.step import Filter
from tnlm.data.text import combine_ngrams, ngram_hashes_batch, normalized_word_hashes


def _strings(value: Any, fields: set[str] | None, key: str | None = None) -> Iterator[str]:
    if isinstance(value, str):
        if fields is None or key in fields:
            yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, fields, k)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v, fields, key)


def _json_files(patterns: list[str]) -> list[str]:
    """The JSON Lines / JSON files among the paths (folders may hold READMEs and label files)."""
    files = [p for p in expand_paths(patterns, suffixes=KNOWN_SUFFIXES) if p.removesuffix(".gz").removesuffix(".zst").endswith((".jsonl", ".json"))]
    if not files:
        raise DataError(f"decontaminate: no .jsonl or .json evaluation files in {patterns}")
    return files


def eval_items(path: str) -> Iterator[Any]:
    """The items of one evaluation file (JSON Lines, or a JSON list)."""
    with open_text(path) as f:
        text = f.read()
    if path.endswith(".json"):
        data = json.loads(text)
        yield from data if isinstance(data, list) else [data]
        return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not JSON Lines ({err}); give .jsonl or .json evaluation files") from err


class Decontaminate(Filter):
    """Removes documents containing an n-gram (default 8 words) of any evaluation item."""

    name = "decontaminate"

    def __init__(self, *, eval_paths: list[str], ngram: int = 8, min_item_words: int = 5,
                 fields: list[str] | None = None) -> None:
        super().__init__()
        self.ngram, self.min_item_words = ngram, min_item_words
        self.names: list[str] = []
        by_width: dict[int, tuple[list[np.ndarray], list[int]]] = {}  # width -> (word hashes, file index)
        for path in _json_files(eval_paths):
            self.names.append(Path(path).parent.name or Path(path).stem)
            for item in eval_items(path):
                for text in _strings(item, set(fields) if fields else None):
                    tokens = normalized_word_hashes(text)
                    if len(tokens) >= min_item_words:
                        lists, owners = by_width.setdefault(min(len(tokens), ngram), ([], []))
                        lists.append(tokens)
                        owners.append(len(self.names) - 1)
        if not by_width:
            raise DataError(f"decontaminate: no evaluation text found in {eval_paths}")
        # width -> (sorted n-gram hashes, index of the evaluation file each came from)
        self.index: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for width, (lists, owners) in sorted(by_width.items(), reverse=True):
            hashes, which = ngram_hashes_batch(lists, width)
            order = np.argsort(hashes, kind="stable")
            self.index[width] = (hashes[order], np.asarray(owners)[which[order]])

    def reject_reason(self, doc: Document) -> str | None:
        tokens = normalized_word_hashes(doc.text)
        for width, (keys, owners) in self.index.items():
            grams = combine_ngrams(tokens, width) if len(tokens) >= width else None
            if grams is None or not len(grams):
                continue
            pos = np.minimum(np.searchsorted(keys, grams), len(keys) - 1)
            hit = np.flatnonzero(keys[pos] == grams)
            if len(hit):
                self.count(f"matched_{self.names[owners[pos[hit[0]]]]}")
                return "contaminated"
        return None
