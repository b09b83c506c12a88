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
    normalized_word_hashes,
    normalized_words,
    stable_hash,
    utf8_len,
    word_hash,
    word_hashes,
    words,
    words_reference,
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
    hashes, owner = ngram_hashes_batch([word_hashes(tokens) for tokens in lists], 3)
    for i, tokens in enumerate(lists):
        assert hashes[owner == i].tolist() == ngram_hashes(tokens, 3).tolist()


def test_stable_hashes_and_one_byte_length():
    assert stable_hash("river") == stable_hash("river") != stable_hash("rivers") and 0 <= stable_hash("") < 1 << 64
    assert word_hash("river") == word_hash("river") != word_hash("rivre")  # the position of each character counts
    assert len({word_hash(w) for w in ("a", "aa", "aaa", "b", "ab", "ba")}) == 6
    assert utf8_len("a子😀") == 1 + 3 + 4


ALPHABET = list("abcXYZ 09_-.,'\n\t") + ["子", "曰", "学", "の", "カ", "ー", "é", "É", "ß", "İ", "😀", "\u0301",
                                          "𠀀", "ǅ", "Ⅷ", "½", "\ud800", "\u3000", "，", "\u00a0", "\x1c", "\u2028", "\x85", "—"]


@pytest.mark.parametrize("seed", range(6))
def test_word_hashes_in_numpy_match_the_python_reference(seed, monkeypatch):
    """The vectorized hashes are `word_hash` of each normalized word, in order, on random text of odd
    lengths mixing scripts, CJK, combining marks, astral characters and lone surrogates; also when the
    text is hashed in small pieces."""
    import tnlm.data.text as text

    rng = random.Random(seed)
    for _ in range(60):
        anywhere = [chr(rng.randrange(0x110000)) for _ in range(5)]  # code points the table has not seen yet
        sample = "".join(rng.choice(ALPHABET + anywhere) for _ in range(rng.randint(0, 97)))
        expected = [word_hash(w) for w in normalized_words(sample)]
        assert normalized_word_hashes(sample).tolist() == expected, repr(sample)
        assert words(sample) == words_reference(sample), repr(sample)
        latin = "".join(c for c in sample if c not in "子曰学のカー𠀀")  # the path for text without CJK
        assert words(latin) == words_reference(latin), repr(latin)
        monkeypatch.setattr(text, "PIECE_CHARS", rng.randint(1, 9))
        assert normalized_word_hashes(sample).tolist() == expected, repr(sample)
        monkeypatch.undo()


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
