"""Text measurements shared by the steps: CJK-aware words, lines, paragraphs and n-grams.

Chinese and Japanese have no spaces, so one CJK character counts as one word; otherwise a Chinese
document would look like a handful of enormous "words" and every word-count rule would drop it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache

import numpy as np

CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\U00020000-\U0002ebef"
WORD_RE = re.compile(rf"[{CJK_RANGES}]|[^\s{CJK_RANGES}]+")
HAS_WORD_CHAR_RE = re.compile(r"\w")
NORM_WORD_RE = re.compile(rf"[{CJK_RANGES}]|[^\W{CJK_RANGES}]+")
CJK_RE = re.compile(rf"[{CJK_RANGES}]")
TERMINAL_PUNCT = tuple('.!?"\'”’)»' + "。！？」』）…")


def words(text: str) -> list[str]:
    """Whitespace-separated tokens that contain a letter or digit; each CJK character is a word."""
    return [w for w in WORD_RE.findall(text) if HAS_WORD_CHAR_RE.search(w)]


def normalized_words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (punctuation dropped), CJK characters one by one;
    used for matching n-grams across documents."""
    return NORM_WORD_RE.findall(text.lower())


def cjk_fraction(tokens: list[str]) -> float:
    if not tokens:
        return 0.0
    return sum(1 for w in tokens if len(w) == 1 and CJK_RE.match(w)) / len(tokens)


def lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]


def paragraphs(text: str) -> list[str]:
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def utf8_len(text: str) -> int:
    """The size of `text` in UTF-8 bytes (what reports count)."""
    return len(text.encode("utf-8"))


def stable_hash(text: str) -> int:
    """A 64-bit hash that is the same in every process and run (Python's `hash` is salted)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


word_hash = lru_cache(maxsize=1 << 20)(stable_hash)  # vocabularies repeat: cache the words' hashes

NGRAM_PRIME = np.uint64(0x100000001B3)


def word_hashes(tokens: list[str]) -> np.ndarray:
    return np.fromiter((word_hash(w) for w in tokens), dtype=np.uint64, count=len(tokens))


def ngram_hashes_by_order(h: np.ndarray, max_n: int) -> Iterator[np.ndarray]:
    """For k = 1 .. max_n: the hashes of all k-grams of the sequence `h` (uint64 per item), where
    `out[i]` hashes `h[i : i + k]` as the polynomial sum(h[i + j] * P ** (k - 1 - j)) in wrapping
    uint64 arithmetic. Each order costs one pass over the previous one. Needs len(h) >= max_n."""
    h = out = h.astype(np.uint64, copy=False)
    with np.errstate(over="ignore"):
        for k in range(1, max_n + 1):
            if k > 1:
                out = out[:-1] * NGRAM_PRIME + h[k - 1 :]
            yield out


def combine_ngrams(h: np.ndarray, n: int) -> np.ndarray:
    """Hashes of all n-grams from per-word hashes `h` (one hash of all of them if fewer than n)."""
    if not len(h):
        return np.zeros(0, dtype=np.uint64)
    *_, last = ngram_hashes_by_order(h, min(n, len(h)))
    return last


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    """64-bit hashes of all word n-grams of `tokens` (one hash of the whole list if it is shorter)."""
    return combine_ngrams(word_hashes(tokens), n)


def ngram_hashes_batch(token_lists: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes(tokens, n)` for many lists at once, each at least n long: returns the hashes and
    the index of the list each came from. One numpy pass over the concatenation, dropping n-grams
    that straddle two lists."""
    flat = [w for tokens in token_lists for w in tokens]
    if len(flat) < n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(token_lists)), [len(t) for t in token_lists])
    out = combine_ngrams(word_hashes(flat), n)
    inside = owner[: len(out)] == owner[n - 1 :]
    return out[inside], owner[: len(out)][inside]
