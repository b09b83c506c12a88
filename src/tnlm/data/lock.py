"""One run at a time per output folder.

`folder_lock(folder)` holds an advisory lock (`fcntl.flock`) on `folder/.lock` for as long as a run
writes there, and writes the holder's process id into that file. A second run on the same folder is
refused with one line naming that process. The operating system releases the lock when its process
ends, however it ends, so the lock of a killed run is stale by construction: the next run takes it
over, and says so. (Where `fcntl` does not exist, on Windows, runs are not locked.)"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from tnlm.errors import DataError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"
log = logging.getLogger(__name__)


def _holder(fd: int) -> str:
    text = os.pread(fd, 64, 0).decode("ascii", errors="replace").strip()
    return text or "unknown"


@contextlib.contextmanager
def folder_lock(folder: str | Path) -> Iterator[None]:
    """Hold the folder's lock for the body of the `with` block (creating the folder if needed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{folder} is in use by another tnlm run (process {_holder(fd)}): wait for it to "
                            "finish, or stop it, or use another output folder") from None
        if (previous := _holder(fd)) != "unknown":
            log.warning("taking over %s from process %s, which ended without releasing it", folder, previous)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # released in order: an empty file is not stale
    finally:
        os.close(fd)
