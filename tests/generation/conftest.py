"""Fixtures of the generation tests: one thread for every test, and the tiny model of every family in turn."""

from __future__ import annotations

import pytest
from torch import nn

from tests.helpers.models import TINY_PRESETS, tiny_model


@pytest.fixture(autouse=True)
def _decoding_on_one_thread(one_thread):
    """Decoding runs one tiny forward per token (see the one_thread fixture)."""
    yield


@pytest.fixture(params=TINY_PRESETS)
def family_model(request) -> nn.Module:
    return tiny_model(request.param)
