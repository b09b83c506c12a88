"""Fixtures of the data tests: a small English corpus the tests make themselves (the real data in
../shared/data comes from the `shared_data` fixture of tests/conftest.py)."""

from __future__ import annotations

import random

import pytest

from tests.helpers.text import english_paragraph


@pytest.fixture
def english_docs() -> list[str]:
    rng = random.Random(7)
    return [english_paragraph(rng, 8) + "\n\n" + english_paragraph(rng, 6) for _ in range(40)]
