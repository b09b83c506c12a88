"""tnlm.devices.tune_allocator: freed CPU buffers stay in the heap for the next allocation (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# In a fresh process: write a 16 MB tensor, free it, write another; the page faults of the second.
PROBE = """
import resource, sys, torch
from tnlm.devices import tune_allocator
applied = tune_allocator()
for cycle in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(4 * 2**20).fill_(1.0)
    del t
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(applied, faults)
"""


def _probe(env: dict[str, str]) -> tuple[bool, int]:
    import os

    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    applied, faults = out.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_freed_buffer_is_reused_without_page_faults_and_the_switch_turns_it_off() -> None:
    pages = 16 * 2**20 // 4096
    applied, faults = _probe({"TNLM_MALLOC_TUNE": "1"})
    assert applied and faults < pages // 10  # the freed 16 MB came back from the heap, already mapped
    applied, faults = _probe({"TNLM_MALLOC_TUNE": "0"})
    assert not applied and faults > pages // 2  # glibc's default: unmapped on free, faulted in again
