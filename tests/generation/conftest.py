"""Fixtures of the generation tests: one thread, and the tiny model of every family in turn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.helpers.models import TINY_PRESETS, tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    """Decoding runs one tiny forward per token: one thread is ~10x faster than two on a busy
    2-core machine (no OpenMP hand-off per op). Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(params=TINY_PRESETS)
def family_model(request) -> nn.Module:
    return tiny_model(request.param)
