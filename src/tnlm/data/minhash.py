"""MinHash signatures and LSH banding in numpy.

The signatures are datasketch's (its default "affine32" scheme: MurmurHash3's 32-bit finaliser, then
h -> a * h + b modulo 2^32 with odd a, parameters drawn from `RandomState(seed)`), so they equal
`datasketch.MinHash(num_perm, seed, hashfunc=int)` fed the same 32-bit shingle hashes; but a batch of
shingles is one numpy expression, with no Python call per shingle. The LSH index is datasketch's
banding (b bands of r rows; documents sharing any band are candidates) as plain dictionaries, and
`optimal_bands` chooses b and r as datasketch does, by the weighted false positive and negative areas,
without importing scipy. tests/data/test_dedup.py checks all three against datasketch."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))
EMPTY = np.uint32(0xFFFFFFFF)


class MinHasher:
    """`num_perm` random affine permutations of 32-bit hashes; a signature is their minima."""

    def __init__(self, *, num_perm: int, seed: int) -> None:
        gen = np.random.RandomState(seed)
        self.a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)  # (P,)
        self.b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)  # (P,)
        self.num_perm = num_perm

    def empty(self) -> np.ndarray:
        return np.full(self.num_perm, EMPTY, dtype=np.uint32)

    def update(self, signature: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """The signature after adding shingles with 32-bit `hashes` (N,): min over (N, P) permuted values."""
        if not len(hashes):
            return signature
        s1, m1, s2, m2, s3 = FMIX32
        with np.errstate(over="ignore"):
            h = hashes.astype(np.uint32)
            h = (h ^ (h >> s1)) * m1
            h = (h ^ (h >> s2)) * m2
            h = (h ^ (h >> s3))[:, None]  # (N, 1)
            return np.minimum(signature, (h * self.a + self.b).min(axis=0))


class BandIndex:
    """LSH over signatures: `bands` bands of `rows` values; `candidates` are the keys sharing a band."""

    def __init__(self, *, bands: int, rows: int) -> None:
        self.rows = rows
        self.tables: list[dict[bytes, list[str]]] = [{} for _ in range(bands)]

    def _keys(self, signature: np.ndarray) -> list[bytes]:
        return [signature[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(len(self.tables))]

    def candidates(self, signature: np.ndarray) -> set[str]:
        return {key for table, band in zip(self.tables, self._keys(signature)) for key in table.get(band, ())}

    def insert(self, key: str, signature: np.ndarray) -> None:
        for table, band in zip(self.tables, self._keys(signature)):
            table.setdefault(band, []).append(key)


def _missed_areas(lo: float, hi: float, num_perm: int, *, points: int = 2001) -> dict[int, np.ndarray]:
    """For each r: the areas under 1 - P(candidate) = (1 - s^r)^b for s in [lo, hi], for b = 1 ..
    num_perm // r, by the trapezoid rule on `points` points; the powers of (1 - s^r) as a running
    product over b, the sums as one product with the rule's weights."""
    s = np.linspace(lo, hi, points)  # (S,)
    weights = np.full(points, (hi - lo) / (points - 1))
    weights[[0, -1]] /= 2
    areas = {}
    for r in range(1, num_perm + 1):
        miss = 1 - s**r  # (S,)
        powers = np.cumprod(np.broadcast_to(miss[:, None], (points, num_perm // r)), axis=1)  # (S, B): miss^b
        areas[r] = weights @ powers  # (B,)
    return areas


@lru_cache(maxsize=64)
def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising the weighted areas of false positives
    (similarity below the threshold, yet candidates) and false negatives (above it, yet not); the
    first such pair in (bands, rows) order."""
    below, above = _missed_areas(0.0, threshold, num_perm), _missed_areas(threshold, 1.0, num_perm)
    best, best_error = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            error = fp_weight * (threshold - below[r][b - 1]) + fn_weight * above[r][b - 1]
            if error < best_error:
                best, best_error = (b, r), error
    return best
