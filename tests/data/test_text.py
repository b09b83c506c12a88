"""The shared text helpers of the data steps: one stable hash, one byte length, one n-gram hashing loop
(checked against a plain-Python polynomial), and a global step's decisions applied by explicit key."""

import random

import numpy as np
import pytest

from tnlm.data.dedup import ExactDedup
from tnlm.data.document import Document
from tnlm.data.text import (
    combine_ngrams,
    ngram_hashes,
    ngram_hashes_batch,
    ngram_hashes_by_order,
    stable_hash,
    utf8_len,
    word_hash,
)

MASK = (1 << 64) - 1


def polynomial(values: list[int]) -> int:
    """The reference: sum(v[j] * P ** (k - 1 - j)) modulo 2**64, in Python integers."""
    out = 0
    for v in values:
        out = (out * 0x100000001B3 + v) & MASK
    return out


@pytest.mark.parametrize("length", [1, 2, 7, 31])
def test_ngram_orders_match_the_python_polynomial(length):
    rng = random.Random(length)
    h = np.array([rng.getrandbits(64) for _ in range(length)], dtype=np.uint64)
    orders = list(ngram_hashes_by_order(h, min(length, 5)))
    for k, got in enumerate(orders, start=1):
        expected = [polynomial([int(x) for x in h[i : i + k]]) for i in range(length - k + 1)]
        assert got.tolist() == expected, k
    assert combine_ngrams(h, length + 3).tolist() == [polynomial([int(x) for x in h])]  # shorter than n: one hash


def test_batched_ngrams_are_the_per_list_ngrams():
    rng = random.Random(1)
    lists = [[f"w{rng.randrange(40)}" for _ in range(rng.randint(3, 12))] for _ in range(9)]
    hashes, owner = ngram_hashes_batch(lists, 3)
    for i, tokens in enumerate(lists):
        assert hashes[owner == i].tolist() == ngram_hashes(tokens, 3).tolist()


def test_one_stable_hash_and_one_byte_length():
    assert word_hash("river") == stable_hash("river") == stable_hash("river")
    assert stable_hash("river") != stable_hash("rivers") and 0 <= stable_hash("") < 1 << 64
    assert utf8_len("a子😀") == 1 + 3 + 4


def test_a_global_step_applies_its_decisions_by_explicit_key():
    step = ExactDedup()
    step.decisions = {"1:0": "exact_duplicate"}
    doc = Document(text="x", id="d")
    assert step.apply_decision(doc, key="1:0") is None and step.apply_decision(doc, key="0:0") is doc
    with pytest.raises(TypeError, match="key"):
        step.process(doc)
    # two shards' runs interleaved: each document is judged by its own shard and position
    first, second = step.run([doc, doc], rank=0), step.run([doc, doc], rank=1)
    assert [next(first, None), next(second, None), next(first, None), next(second, None)] == [doc, doc, doc, None]
