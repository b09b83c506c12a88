"""Process-wide settings that make CPU training and inference faster; opt-in, the CLI turns them on.

PyTorch has no caching allocator on the CPU: every tensor comes from the C library's malloc and goes
back to it. glibc serves large blocks with fresh `mmap` pages and returns them on free, so a step
that allocates the same buffers again pays a page fault per 4 KiB every time: measured here, the
block algorithm at T = 32768, D = 128 spent a third of its time in page faults, and the share grows
with the tensors, which made long sequences cost more per token than short ones.
`keep_freed_memory()` tells glibc to serve large blocks from its heap and keep freed memory for
reuse, as a GPU caching allocator does; the price is that the process does not give memory back to
the OS before it exits. Set TNLM_KEEP_FREED_MEMORY=0 to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap
_TRIM_THRESHOLD = (1 << 31) - 1  # never shrink the heap

_done: bool | None = None


def keep_freed_memory() -> bool:
    """Ask glibc malloc to reuse freed memory instead of returning it to the OS (see the module doc).
    Returns True when it is in effect; False off Linux/glibc or when TNLM_KEEP_FREED_MEMORY=0.
    Idempotent; call it early, before the first large tensors are made."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if os.environ.get("TNLM_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return _done
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return _done
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
