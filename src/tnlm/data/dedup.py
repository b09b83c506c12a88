"""Exact and near (MinHash + LSH) deduplication. Both are global steps: they see
every document first and keep the first of each group in corpus order, so the result does not
depend on how many workers ran."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator

import numpy as np

from tnlm.data.document import Document
from tnlm.data.minhash import EMPTY, BandIndex, MinHasher, optimal_bands
from tnlm.errors import DataError
from tnlm.data.step import GlobalStep
from tnlm.data.text import combine_ngrams, normalized_word_hash_pieces, normalized_word_hashes, normalized_words

# words per piece of a document's shingles: MinHash holds one (piece x num_perm) uint64 array at a time,
# 4 MB at 128 permutations, instead of one for the whole document (gigabytes for a 50 MB one)
SHINGLE_CHUNK = 1 << 12


class ExactDedup(GlobalStep):
    """Removes documents whose text, lower-cased with whitespace and punctuation ignored, repeats an
    earlier document's."""

    name = "exact_dedup"

    def features(self, docs: list[Document]) -> list[int]:
        return [int.from_bytes(hashlib.blake2b(normalized_word_hashes(doc.text).tobytes(), digest_size=8).digest(),
                               "little") for doc in docs]

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


MASK32 = np.uint64(0xFFFFFFFF)


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the shingles of `text` (the set `shingles` gives, hashed), computed in numpy
    from per-word hashes rather than with one Python call per shingle."""
    return np.unique(combine_ngrams(normalized_word_hashes(text), n) & MASK32)


def shingle_hash_chunks(text: str, n: int, *, chunk_words: int = SHINGLE_CHUNK) -> Iterator[np.ndarray]:
    """`shingle_hashes(text, n)` in pieces of the shingles of at most `chunk_words` words each (their
    union is the same set), hashing the text a piece at a time: memory stays bounded however long it is."""
    carry = np.zeros(0, dtype=np.uint64)  # the last n - 1 words: the shingles that cross into the next piece
    emitted = False
    for piece in normalized_word_hash_pieces(text):
        for start in range(0, len(piece), chunk_words):
            words = np.concatenate([carry, piece[start : start + chunk_words]])
            if len(words) < n:  # not one whole shingle yet
                carry = words
                continue
            yield np.unique(combine_ngrams(words, n) & MASK32)
            emitted, carry = True, words[len(words) - n + 1 :] if n > 1 else words[:0]
    if not emitted and len(carry):  # a text shorter than n words is one shingle
        yield np.unique(combine_ngrams(carry, n) & MASK32)


class MinHashDedup(GlobalStep):
    """Near-duplicate removal with MinHash signatures over word n-grams and LSH banding.

    A document is removed when an earlier kept document is an LSH candidate and their estimated
    Jaccard similarity is at least `threshold`. `bands` x `rows` must equal `num_perm`; leave them
    out to have them chosen for the threshold (as datasketch chooses them)."""

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
        # built here, once, in the process that builds the pipeline: forked workers inherit them
        self.hasher = MinHasher(num_perm=num_perm, seed=seed)
        self.bands()

    def bands(self) -> tuple[int, int]:
        return self.params or optimal_bands(self.threshold, self.num_perm)

    def features(self, docs: list[Document]) -> list[np.ndarray]:
        """MinHash signatures, (num_perm,) uint32 each. A signature is a minimum over shingles, so it
        is taken piece by piece (`shingle_hash_chunks`)."""
        hasher = self.hasher
        signatures = []
        for doc in docs:
            signature = hasher.empty()
            for piece in shingle_hash_chunks(doc.text, self.ngram):
                signature = hasher.update(signature, piece)
            signatures.append(signature)
        return signatures

    def decide(self, features: Iterable[tuple[str, np.ndarray]]) -> dict[str, str]:
        bands, rows = self.bands()
        index = BandIndex(bands=bands, rows=rows)
        kept: dict[str, np.ndarray] = {}
        drop = {}
        for key, signature in features:
            signature = np.asarray(signature, dtype=np.uint32)
            if (signature == EMPTY).all():  # no words at all: nothing to compare
                continue
            candidates = index.candidates(signature)
            self.count("lsh_candidates", len(candidates))
            needed = self.threshold * self.num_perm
            if any(np.count_nonzero(signature == kept[c]) >= needed for c in candidates):
                drop[key] = "near_duplicate"
                continue
            index.insert(key, signature)
            kept[key] = signature
        return drop
