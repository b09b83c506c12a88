import random

import numpy as np
import pytest

from tnlm.data.dedup import ExactDedup, MinHashDedup, shingle_hash_chunks, shingle_hashes, shingles
from tnlm.data.document import Document
from tnlm.data.files import DataError


def keyed(texts):
    return [(f"0:{i}", Document(text=t, id=str(i))) for i, t in enumerate(texts)]


def fitted(step, texts):
    step.fit(keyed(texts))
    return step.decisions


def test_exact_dedup_ignores_case_space_and_punctuation():
    texts = ["Hello world, again.", "hello   WORLD again", "Hello world again and more", "Hello world, again."]
    assert fitted(ExactDedup(), texts) == {"0:1": "exact_duplicate", "0:3": "exact_duplicate"}


def test_shingle_hashes_match_shingles():
    text = "one two three four five six seven one two three four five"
    assert len(shingle_hashes(text, 3)) == len(shingles(text, 3)) == 7  # 10 trigrams, 3 repeated
    assert len(shingle_hashes("学而时习之", 3)) == 3 and len(shingle_hashes("two words", 5)) == 1


def planted_corpus(seed: int = 0):
    """Originals of random words; near-duplicates with ~1% of words replaced; hard negatives that share
    about a third of an original's text. Returns texts and group labels (-1: not a duplicate)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    texts, groups = [], []
    for g in range(250):
        base = [rng.choice(vocab) for _ in range(rng.randint(60, 250))]
        texts.append(" ".join(base)), groups.append(g)
        for _ in range(rng.randint(0, 2)):
            copy = list(base)
            for _ in range(max(1, len(copy) // 100)):
                copy[rng.randrange(len(copy))] = rng.choice(vocab)
            texts.append(" ".join(copy)), groups.append(g)
        if g % 5 == 0:  # hard negative: a third of the original, then new text
            third = len(base) // 3
            texts.append(" ".join(base[:third] + [rng.choice(vocab) for _ in range(2 * third)])), groups.append(-1 - g)
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], [groups[i] for i in order]


def test_minhash_recall_and_precision_on_planted_near_duplicates():
    texts, groups = planted_corpus()
    removed = {int(k.split(":")[1]) for k in fitted(MinHashDedup(ngram=5, num_perm=128, threshold=0.7), texts)}
    first_of_group = {}
    for i, g in enumerate(groups):
        first_of_group.setdefault(g, i)
    planted = {i for i, g in enumerate(groups) if g >= 0 and first_of_group[g] != i}  # should go
    recall = len(removed & planted) / len(planted)
    precision = len(removed & planted) / max(len(removed), 1)
    assert len(planted) > 150
    assert recall >= 0.95, recall
    assert precision >= 0.99, precision
    assert not removed & set(first_of_group.values()), "the first of every group (and every hard negative) stays"


def test_minhash_options_are_validated():
    with pytest.raises(DataError, match="bands"):
        MinHashDedup(num_perm=128, bands=10, rows=10)
    with pytest.raises(DataError, match="threshold"):
        MinHashDedup(threshold=1.5)


def test_minhash_is_cjk_aware():
    poem = "床前明月光，疑是地上霜。举头望明月，低头思故乡。" * 3
    other = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。" * 3
    drop = fitted(MinHashDedup(ngram=3, threshold=0.7), [poem, poem.replace("霜", "雪"), other])
    assert drop == {"0:1": "near_duplicate"}


def test_shingle_pieces_make_up_the_whole_set():
    rng = random.Random(2)
    text = " ".join(f"w{rng.randrange(30)}" for _ in range(500))
    for n, chunk in ((5, 7), (1, 3), (3, 1), (5, 10_000)):
        pieces = list(shingle_hash_chunks(text, n, chunk_words=chunk))
        assert set(np.concatenate(pieces).tolist()) == set(shingle_hashes(text, n).tolist()), (n, chunk)
    assert [p.tolist() for p in shingle_hash_chunks("two words", 5, chunk_words=1)] == [shingle_hashes("two words", 5).tolist()]
    assert list(shingle_hash_chunks("", 5)) == []


def test_minhash_memory_per_document_is_bounded():
    """Issue 19.9: MinHash peaked at 5.2 GB for one 50 MB document (a shingles x permutations array)."""
    import tracemalloc

    from datasketch import MinHash

    rng = random.Random(3)
    big = " ".join(f"w{rng.randrange(50_000)}" for _ in range(50_000))  # 350 kB, 50k shingles
    step = MinHashDedup(ngram=5, num_perm=128)
    tracemalloc.start()
    try:
        (signature,) = step.features([Document(text=big, id="big")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB"  # the whole-document array alone is 50k x 128 x 8 = 51 MB
    reference = MinHash.bulk([shingle_hashes(big, 5)], num_perm=128, seed=1, hashfunc=int)[0]
    assert np.array_equal(signature, reference.hashvalues)
