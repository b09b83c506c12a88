"""A corpus with planted duplicates, for comparing deduplication: unique documents, clusters of near
copies (an original and copies with a word or two changed) and exact copies (case and punctuation
changed), spread over several shards so that copies sit in other shards and other tasks."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

SYLLABLES = ["ka", "lo", "mi", "ten", "ra", "su", "vel", "an", "tor", "pi", "ne", "dra", "os", "fu", "gil", "be"]


@dataclass
class Planted:
    near: list[list[str]] = field(default_factory=list)  # ids of each cluster, the original first in corpus order
    exact: list[list[str]] = field(default_factory=list)
    unique: list[str] = field(default_factory=list)


def _text(rng: random.Random, vocabulary: list[str], words: int) -> str:
    sentences, left = [], words
    while left > 0:
        n = min(left, rng.randint(8, 16))
        sentences.append(" ".join(rng.choice(vocabulary) for _ in range(n)).capitalize() + ".")
        left -= n
    return " ".join(sentences)


def _near_copy(rng: random.Random, text: str, vocabulary: list[str], changes: int) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), changes):
        words[i] = rng.choice(vocabulary) + ("." if words[i].endswith(".") else "")
    return " ".join(words)


def planted_corpus(folder: Path, *, unique: int = 40, clusters: int = 8, exact: int = 3, shards: int = 6,
                   words: int = 300, changes: int = 1, seed: int = 3) -> Planted:
    """Write `shards` JSON Lines files to `folder`; a document's shard is chosen at random, originals
    before their copies in corpus order. A near copy has `changes` words replaced: with 300 words and
    5-word shingles, one change leaves a Jaccard similarity near 0.97, which LSH at threshold 0.8 finds
    with probability > 0.99 (at 0.88 it would miss one pair in seven)."""
    rng = random.Random(seed)
    vocabulary = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(3000)})
    rows: list[list[dict]] = [[] for _ in range(shards)]
    planted = Planted()

    def put(doc_id: str, text: str, shard: int) -> None:
        rows[shard].append({"id": doc_id, "text": text})

    for i in range(unique):
        put(f"u{i}", _text(rng, vocabulary, words), rng.randrange(shards))
        planted.unique.append(f"u{i}")
    for c in range(clusters):
        original, first = _text(rng, vocabulary, words), rng.randrange(shards - 1)
        ids = [f"n{c}-0"]
        put(ids[0], original, first)
        for k in range(1, rng.randint(2, 4)):
            ids.append(f"n{c}-{k}")
            put(ids[-1], _near_copy(rng, original, vocabulary, changes), rng.randrange(first + 1, shards))
        planted.near.append(ids)
    for e in range(exact):
        original, first = _text(rng, vocabulary, words), rng.randrange(shards - 1)
        put(f"e{e}-0", original, first)
        put(f"e{e}-1", original.upper().replace(".", "!"), rng.randrange(first + 1, shards))
        planted.exact.append([f"e{e}-0", f"e{e}-1"])
    folder.mkdir(parents=True, exist_ok=True)
    for s, shard_rows in enumerate(rows):
        (folder / f"part{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard_rows))
    return planted
