"""Text measurements shared by the steps: CJK-aware words, lines, paragraphs and n-grams.

Chinese and Japanese have no spaces, so one CJK character counts as one word; otherwise a Chinese
document would look like a handful of enormous "words" and every word-count rule would drop it."""

from __future__ import annotations

import hashlib
import re
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


@lru_cache(maxsize=1 << 20)
def word_hash(word: str) -> int:
    """A stable 64-bit hash of one word (cached: vocabularies repeat)."""
    return int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")


def word_hashes(tokens: list[str]) -> np.ndarray:
    return np.fromiter((word_hash(w) for w in tokens), dtype=np.uint64, count=len(tokens))


def combine_ngrams(h: np.ndarray, n: int) -> np.ndarray:
    """Hashes of all n-grams from per-word hashes `h` (one hash of all of them if fewer than n),
    a polynomial in wrapping uint64 arithmetic."""
    if not len(h):
        return np.zeros(0, dtype=np.uint64)
    width = min(n, len(h))
    out = np.zeros(len(h) - width + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(width):
            out = out * np.uint64(0x100000001B3) + h[k : len(h) - width + 1 + k]
    return out


def ngram_hashes(tokens: list[str], n: int) -> np.ndarray:
    """64-bit hashes of all word n-grams of `tokens` (one hash of the whole list if it is shorter)."""
    return combine_ngrams(word_hashes(tokens), n)


def ngram_hashes_batch(token_lists: list[list[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`ngram_hashes(tokens, n)` for many lists at once, each at least n long: returns the hashes and
    the index of the list each came from. One numpy pass over the concatenation, dropping n-grams
    that straddle two lists."""
    lengths = np.array([len(t) for t in token_lists], dtype=np.int64)
    flat = [w for tokens in token_lists for w in tokens]
    if not flat:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    h = np.fromiter((word_hash(w) for w in flat), dtype=np.uint64, count=len(flat))
    owner = np.repeat(np.arange(len(token_lists)), lengths)
    count = len(h) - n + 1
    out = np.zeros(count, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            out = out * np.uint64(0x100000001B3) + h[k : k + count]
    inside = owner[:count] == owner[n - 1 :]
    return out[inside], owner[:count][inside]
