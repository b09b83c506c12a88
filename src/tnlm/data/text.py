"""Text measurements shared by the steps: CJK-aware words, lines, paragraphs and n-grams.

Chinese and Japanese have no spaces, so one CJK character counts as one word; otherwise a Chinese
document would look like a handful of enormous "words" and every word-count rule would drop it.

Deduplication and decontamination compare documents through stable 64-bit hashes of their normalized
words (`normalized_word_hashes`): computed for a whole text at once in numpy from its code points,
with `word_hash`, the same function for one word in plain Python, as its reference."""

from __future__ import annotations

import codecs
import hashlib
import re
from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import numpy.ma  # (np.unique loads it on first use: loaded with this module, forked workers inherit it)

codecs.lookup("utf-32-le")  # the word hashes' codec, looked up once here, not in every forked worker

CJK_RANGES = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\U00020000-\U0002ebef"
WORD_RE = re.compile(rf"[{CJK_RANGES}]|[^\s{CJK_RANGES}]+")
# a CJK character, or a run of other non-space characters holding a letter, digit or underscore
WORD_WITH_CHAR_RE = re.compile(rf"[{CJK_RANGES}]|[^\s\w{CJK_RANGES}]*[^\W{CJK_RANGES}][^\s{CJK_RANGES}]*")
HAS_WORD_CHAR_RE = re.compile(r"\w")
NORM_WORD_RE = re.compile(rf"[{CJK_RANGES}]|[^\W{CJK_RANGES}]+")
CJK_RE = re.compile(rf"[{CJK_RANGES}]")
TERMINAL_PUNCT = tuple('.!?"\'”’)»' + "。！？」』）…")


def words(text: str) -> list[str]:
    """Whitespace-separated tokens that contain a letter or digit; each CJK character is a word."""
    if text.isascii() or not CJK_RE.search(text):  # str.split and the regex's \s agree on whitespace
        return [w for w in text.split() if w.isalnum() or HAS_WORD_CHAR_RE.search(w)]
    return WORD_WITH_CHAR_RE.findall(text)


def words_reference(text: str) -> list[str]:
    """`words`, written plainly: the whitespace tokens, then those with a word character."""
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


NGRAM_PRIME = np.uint64(0x100000001B3)


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


def ngram_hashes_batch(word_hash_arrays: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """`combine_ngrams(h, n)` for many word-hash arrays at once, each at least n long: returns the
    n-gram hashes and the index of the array each came from. One numpy pass over the concatenation,
    dropping n-grams that straddle two arrays."""
    flat = np.concatenate(word_hash_arrays) if word_hash_arrays else np.zeros(0, dtype=np.uint64)
    if len(flat) < n:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(len(word_hash_arrays)), [len(h) for h in word_hash_arrays])
    out = combine_ngrams(flat, n)
    inside = owner[: len(out)] == owner[n - 1 :]
    return out[inside], owner[: len(out)][inside]


MASK64 = (1 << 64) - 1
K_CHAR, K_POS, K_ONE, K_LEN = 0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93
PIECE_CHARS = 1 << 20  # long texts are hashed a piece at a time, cut between words
CUT_RE = re.compile(rf"\W|[{CJK_RANGES}]")


def _mix(z: int) -> int:
    """splitmix64's finaliser on a Python int (the reference for `_mix64`)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _mix64(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def word_hash(word: str) -> int:
    """The stable 64-bit hash of one normalized word: each character's code point mixed with its
    position in the word, summed, mixed with the length. Plain Python: the reference for
    `normalized_word_hashes`, and the hash of words that come as a list."""
    total = sum(_mix((ord(c) * K_CHAR + j * K_POS + K_ONE) & MASK64) for j, c in enumerate(word)) & MASK64
    return _mix((total + len(word) * K_LEN) & MASK64)


word_hash_cached = lru_cache(maxsize=1 << 20)(word_hash)  # vocabularies repeat


def word_hashes(tokens: list[str]) -> np.ndarray:
    return np.fromiter((word_hash_cached(w) for w in tokens), dtype=np.uint64, count=len(tokens))


WORD_CHAR_RE = re.compile(r"\w")
_CLASSES = np.full(0x110000, 255, dtype=np.uint8)  # per code point, filled as code points are first seen


def char_class(char: str) -> int:
    """0 not a word character, 1 a word character, 2 a CJK character (a word by itself), exactly as
    NORM_WORD_RE sees them."""
    return 2 if CJK_RE.match(char) else 1 if WORD_CHAR_RE.match(char) else 0


def _char_classes(codes: np.ndarray) -> np.ndarray:
    """`char_class` of every code point in `codes` (N,) uint32, from a table that classifies each code
    point the first time any text holds it."""
    kind = _CLASSES[codes]
    unknown = kind == 255
    if unknown.any():
        for code in np.unique(codes[unknown]).tolist():
            _CLASSES[code] = char_class(chr(code))
        kind = _CLASSES[codes]
    return kind


def _piece_word_hashes(lowered: str) -> np.ndarray:
    codes = np.frombuffer(lowered.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    kind = _char_classes(codes)
    before = np.concatenate([[0], kind[:-1]]).astype(np.uint8)
    starts = (kind == 2) | ((kind == 1) & (before != 1))
    inside = np.flatnonzero(kind)  # positions of characters that belong to a word
    first = np.flatnonzero(starts[inside])  # where each word starts, among `inside`
    if not len(first):
        return np.zeros(0, dtype=np.uint64)
    word_of = np.cumsum(starts[inside]) - 1
    position = (inside - inside[first][word_of]).astype(np.uint64)
    with np.errstate(over="ignore"):
        terms = _mix64(codes[inside].astype(np.uint64) * np.uint64(K_CHAR) + position * np.uint64(K_POS) + np.uint64(K_ONE))
        totals = np.add.reduceat(terms, first)
        lengths = np.diff(np.append(first, len(inside))).astype(np.uint64)
        return _mix64(totals + lengths * np.uint64(K_LEN))


def normalized_word_hash_pieces(text: str) -> Iterator[np.ndarray]:
    """`normalized_word_hashes(text)` a piece of the text at a time (at most PIECE_CHARS characters, cut
    before a non-word or CJK character), so memory stays bounded however long the text."""
    start, lowered = 0, text.lower()
    while start < len(lowered):
        end = start + PIECE_CHARS
        if end < len(lowered):
            cut = CUT_RE.search(lowered, end)
            end = cut.start() if cut else len(lowered)
        yield _piece_word_hashes(lowered[start:end])
        start = end


def normalized_word_hashes(text: str) -> np.ndarray:
    """`[word_hash(w) for w in normalized_words(text)]`, computed in numpy over the code points."""
    pieces = list(normalized_word_hash_pieces(text))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint64)
