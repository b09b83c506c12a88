"""Exact and near (MinHash + LSH, via datasketch) deduplication. Both are global steps: they see
every document first and keep the first of each group in corpus order, so the result does not
depend on how many workers ran."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

import numpy as np

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.step import GlobalStep
from tnlm.data.text import NORM_WORD_RE, ngram_hashes, normalized_words, stable_hash

# words per piece of a document's shingles: MinHash holds one (piece x num_perm) uint64 array at a time,
# 4 MB at 128 permutations, instead of one for the whole document (gigabytes for a 50 MB one)
SHINGLE_CHUNK = 1 << 12


class ExactDedup(GlobalStep):
    """Removes documents whose text, lower-cased with whitespace and punctuation ignored, repeats an
    earlier document's."""

    name = "exact_dedup"

    def features(self, docs: list[Document]) -> list[int]:
        return [stable_hash(" ".join(normalized_words(doc.text))) for doc in docs]

    def decide(self, features: Iterable[tuple[str, int]]) -> dict[str, str]:
        seen: set[int] = set()
        drop = {}
        for key, digest in features:
            if digest in seen:
                drop[key] = "exact_duplicate"
            seen.add(digest)
        return drop


def shingles(text: str, n: int) -> set[str]:
    """Word n-grams (CJK characters are words), lower-cased, punctuation ignored; a text shorter
    than n words is one shingle."""
    tokens = normalized_words(text)
    if len(tokens) <= n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the shingles of `text` (the set `shingles` gives, hashed), computed in numpy
    from per-word hashes rather than with one Python call per shingle."""
    return np.unique(ngram_hashes(normalized_words(text), n) & np.uint64(0xFFFFFFFF))


def shingle_hash_chunks(text: str, n: int, *, chunk_words: int = SHINGLE_CHUNK) -> Iterator[np.ndarray]:
    """`shingle_hashes(text, n)` in pieces of the shingles of at most `chunk_words` words each (their
    union is the same set), reading the words lazily: memory stays bounded however long the text."""
    words = (m.group() for m in NORM_WORD_RE.finditer(text.lower()))
    carry: list[str] = []  # the last n - 1 words: the shingles that cross into the next piece
    while batch := list(islice(words, max(chunk_words, n))):
        tokens = carry + batch
        yield np.unique(ngram_hashes(tokens, n) & np.uint64(0xFFFFFFFF))
        carry = tokens[len(tokens) - n + 1 :] if n > 1 else []


def _identity(value: int) -> int:
    return int(value)


class MinHashDedup(GlobalStep):
    """Near-duplicate removal with MinHash signatures over word n-grams and LSH banding (datasketch).

    A document is removed when an earlier kept document is an LSH candidate and their estimated
    Jaccard similarity is at least `threshold`. `bands` x `rows` must equal `num_perm`; leave them
    out to let datasketch choose them for the threshold."""

    name = "minhash_dedup"

    def __init__(self, *, ngram: int = 5, num_perm: int = 128, threshold: float = 0.8,
                 bands: int | None = None, rows: int | None = None, seed: int = 1) -> None:
        super().__init__()
        if (bands is None) != (rows is None) or (bands and bands * rows != num_perm):
            raise DataError(f"minhash_dedup: give both bands and rows with bands * rows == num_perm ({num_perm})")
        if not 0 < threshold < 1:
            raise DataError("minhash_dedup: threshold must be between 0 and 1")
        self.ngram, self.num_perm, self.threshold, self.seed = ngram, num_perm, threshold, seed
        self.params = (bands, rows) if bands else None

    def features(self, docs: list[Document]) -> list[np.ndarray]:
        """MinHash signatures (their hash values), one set of permutations for the whole batch. A
        signature is a minimum over shingles, so it is taken piece by piece (`shingle_hash_chunks`)."""
        from datasketch import MinHash

        empty = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=_identity)
        signatures = []
        for doc in docs:
            sig = empty.copy()
            for piece in shingle_hash_chunks(doc.text, self.ngram):
                sig.update_batch(piece)
            signatures.append(sig.hashvalues)
        return signatures

    def decide(self, features: Iterable[tuple[str, np.ndarray]]) -> dict[str, str]:
        from datasketch import LeanMinHash, MinHash, MinHashLSH

        scheme = MinHash(num_perm=1).scheme
        empty = MinHash(num_perm=self.num_perm, seed=self.seed).hashvalues
        lsh = MinHashLSH(threshold=self.threshold, num_perm=self.num_perm, params=self.params)
        kept: dict[str, LeanMinHash] = {}
        drop = {}
        for key, values in features:
            if np.array_equal(values, empty):  # no words at all: nothing to compare
                continue
            sig = LeanMinHash(seed=self.seed, hashvalues=values, scheme=scheme)
            candidates = lsh.query(sig)
            self.count("lsh_candidates", len(candidates))
            if any(sig.jaccard(kept[c]) >= self.threshold for c in candidates):
                drop[key] = "near_duplicate"
                continue
            lsh.insert(key, sig)
            kept[key] = sig
        return drop
