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


@pytest.mark.parametrize(("num_perm", "seed", "size"), [(128, 1, 1), (128, 1, 997), (64, 7, 33), (200, 3, 4097)])
def test_minhash_signatures_are_datasketchs(num_perm, seed, size):
    """The numpy signatures equal datasketch's MinHash (its default scheme) fed the same hashes."""
    from datasketch import MinHash

    from tnlm.data.minhash import MinHasher

    rng = np.random.default_rng(size)
    hashes = rng.integers(0, 1 << 32, size, dtype=np.uint64)
    hasher = MinHasher(num_perm=num_perm, seed=seed)
    reference = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)
    reference.update_batch(hashes.tolist())
    ours = hasher.update(hasher.update(hasher.empty(), hashes[: size // 2]), hashes[size // 2 :])
    assert np.array_equal(ours, reference.hashvalues)


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
def test_minhash_decisions_are_those_of_datasketchs_lsh(threshold):
    """Same candidates (datasketch's MinHashLSH with the same bands) and the same Jaccard rule."""
    from datasketch import LeanMinHash, MinHash, MinHashLSH

    from tnlm.data.minhash import optimal_bands

    texts, _ = planted_corpus(seed=int(threshold * 10))
    step = MinHashDedup(ngram=5, num_perm=128, threshold=threshold)
    keyed_features = list(zip([k for k, _ in keyed(texts)], step.features([d for _, d in keyed(texts)])))
    ours = step.decide(keyed_features)
    bands = optimal_bands(threshold, 128)
    lsh = MinHashLSH(threshold=threshold, num_perm=128, params=bands)
    assert (lsh.b, lsh.r) == bands
    kept, reference = {}, {}
    scheme = MinHash(num_perm=1).scheme
    for key, values in keyed_features:
        sig = LeanMinHash(seed=1, hashvalues=values, scheme=scheme)
        if any(sig.jaccard(kept[c]) >= threshold for c in lsh.query(sig)):
            reference[key] = "near_duplicate"
            continue
        lsh.insert(key, sig)
        kept[key] = sig
    assert ours == reference and len(ours) > 50


def test_optimal_bands_are_datasketchs():
    from datasketch import MinHashLSH

    from tnlm.data.minhash import optimal_bands

    for num_perm in (32, 128, 250):
        for threshold in (0.55, 0.75, 0.85):
            lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
            assert optimal_bands(threshold, num_perm) == (lsh.b, lsh.r), (num_perm, threshold)
