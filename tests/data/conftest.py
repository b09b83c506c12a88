"""Fixtures for the data tests: the real data in ../shared/data (skipped when absent) and small
corpora the tests make themselves."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"real data not found at {SHARED.resolve()} (../shared/data beside the repo)")
    return SHARED.resolve()


def english_paragraph(rng: random.Random, n_sentences: int = 6) -> str:
    subjects = ["The farmer", "A small child", "Our teacher", "The old sailor", "My neighbour", "The doctor"]
    verbs = ["walked to", "looked at", "talked about", "thought of", "painted", "wrote a letter to"]
    objects = ["the river", "a red barn", "the quiet town", "the morning market", "an old friend", "the garden"]
    tails = ["before the rain came.", "and smiled at the view.", "with a great deal of care.",
             "while the bells were ringing.", "because it was the only thing to do.", "in the light of the evening."]
    return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
                    for _ in range(n_sentences))


@pytest.fixture
def english_docs() -> list[str]:
    rng = random.Random(7)
    return [english_paragraph(rng, 8) + "\n\n" + english_paragraph(rng, 6) for _ in range(40)]
