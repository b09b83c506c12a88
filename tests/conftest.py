import os
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO

SHARED_DATA = REPO.parent / "shared" / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def shared_data() -> Path:
    """The real public data beside the repository (../shared/data); the test is skipped without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (it ships beside the repo in CI, not in a clone)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One torch thread for the test, restored after: tiny models run many small matmuls, and on a busy
    2-core machine one thread is several times faster than two (no OpenMP hand-off per op)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _compile_cache(tmp_path, monkeypatch) -> None:
    """Compiled decode steps are kept in a folder of each test's own (made only when a step is kept, and
    gone with the test's tmp_path), never in the user's ~/.cache, and no test finds another's there."""
    monkeypatch.setenv("TNLM_COMPILE_CACHE", str(tmp_path / "compile-cache"))
