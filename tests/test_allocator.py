"""tnlm.devices.tune_allocator: freed CPU buffers stay in the heap for the next pass (glibc)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# In a fresh process: whether a 20 MB tensor lies in the process's heap (glibc's default maps a block
# that large with mmap and unmaps it on free), then ten "passes" that each write three 20 MB
# activations and free them, with the page faults of each pass.
PROBE = """
import resource, torch
from tnlm.devices import tune_allocator
applied = tune_allocator()
t = torch.empty(5 * 2**20)
heap = next(line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]"))
lo, hi = (int(x, 16) for x in heap.split("-"))
in_heap = lo <= t.data_ptr() < hi
del t
faults = []
for _ in range(10):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    acts = [torch.empty(5 * 2**20).fill_(1.0) for _ in range(3)]
    del acts
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, in_heap, *faults)
"""
PASS_PAGES = 3 * 20 * 2**20 // 4096


def _probe(switch: str) -> tuple[bool, bool, list[int]]:
    env = {**os.environ, "TNLM_MALLOC_TUNE": switch}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout.split()
    return out[0] == "True", out[1] == "True", [int(f) for f in out[2:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_large_buffers_come_from_the_heap_and_later_passes_reuse_them_and_the_switch_turns_it_off() -> None:
    applied, in_heap, faults = _probe("1")
    assert applied and in_heap
    # the heap settles within a few passes (alignment padding leaves a hole or two); then no new pages
    assert sum(faults[5:]) < PASS_PAGES // 10, faults
    applied, in_heap, _ = _probe("0")
    assert not applied and not in_heap  # glibc's default: mapped fresh, returned to the OS on free
    assert not _probe("Off")[0]
