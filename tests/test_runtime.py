"""keep_freed_memory: large blocks freed by one step are reused by the next without page faults."""

import os
import subprocess
import sys

import pytest

PROBE = r"""
import resource, torch
from tnlm.runtime import keep_freed_memory
print(int(keep_freed_memory()))
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):  # a 64 MiB buffer made and freed per step; the heap settles within a few steps
    torch.empty(16 << 20).fill_(1.0)
before = faults()
for _ in range(6):
    torch.empty(16 << 20).fill_(1.0)
print(faults() - before)
"""


def _probe(keep: str) -> tuple[bool, int]:
    env = {**os.environ, "TNLM_KEEP_FREED_MEMORY": keep}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    enabled, faults = out.stdout.split()
    return enabled == "1", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings exist on Linux only")
def test_freed_memory_is_reused_without_page_faults():
    enabled, faults = _probe("1")
    if not enabled:
        pytest.skip("this C library has no mallopt (not glibc)")
    pages = 6 * (64 << 20) // 4096
    assert faults < pages // 6, f"{faults} page faults in 6 steps that reuse {pages // 6} pages each"
    # the control: glibc's default gives the pages back and faults them in again on every allocation
    enabled, default_faults = _probe("0")
    assert not enabled
    assert default_faults > pages // 2
