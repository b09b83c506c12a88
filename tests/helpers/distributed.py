"""Starting the processes of a distributed test: torchrun on this machine (a free port of its own),
one thread per process, a hard time limit after which the whole process group is killed, and the
output kept for the assertion message. Results come back through files, never through pipes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass

from tests.helpers import REPO

LIMIT = 300.0  # seconds; every launch here takes well under a minute on an idle 2-core machine


@dataclass
class Finished:
    returncode: int
    output: str


def distributed_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'src'}")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TNLM_LIGHTNING_BACKEND"):
        env.pop(key, None)
    return env


def torchrun(nproc: int, *args: str, limit: float = LIMIT) -> Finished:
    """`torchrun --standalone --nproc_per_node nproc ARGS` (a script path, or -m module ...)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return run(command, limit=limit)


def run(command: list[str], *, limit: float = LIMIT) -> Finished:
    proc = subprocess.Popen(command, cwd=REPO, env=distributed_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        raise AssertionError(f"{' '.join(command)} did not finish in {limit:.0f} s (a hang?):\n{output[-4000:]}") from None
    return Finished(proc.returncode, output)
