"""English-like text the data tests make themselves."""

from __future__ import annotations

import random


def english_paragraph(rng: random.Random, n_sentences: int = 6) -> str:
    subjects = ["The farmer", "A small child", "Our teacher", "The old sailor", "My neighbour", "The doctor"]
    verbs = ["walked to", "looked at", "talked about", "thought of", "painted", "wrote a letter to"]
    objects = ["the river", "a red barn", "the quiet town", "the morning market", "an old friend", "the garden"]
    tails = ["before the rain came.", "and smiled at the view.", "with a great deal of care.",
             "while the bells were ringing.", "because it was the only thing to do.", "in the light of the evening."]
    return " ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
                    for _ in range(n_sentences))
