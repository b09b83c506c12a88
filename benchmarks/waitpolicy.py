"""OpenMP's wait policy for a benchmark's child processes: `--wait-policy`.

What an idle OpenMP worker thread does between parallel regions decides much of a small model's step
time on a CPU: a sleeping worker takes 60-90 us to wake for the next region, a spinning one starts at
once but burns its core while it waits. GNU OpenMP (PyTorch's on Linux) spins for a while and then
sleeps when OMP_WAIT_POLICY is unset, which is what a user who sets nothing gets.

- inherit (default): leave the environment as it is; unset, that is GNU OpenMP's spin-then-sleep
  default, so the numbers are what `tnlm generate` gives such a user on an otherwise idle machine.
- passive: workers sleep at once. Slower per region, but a benchmark on a machine shared with other
  work is not slowed by spinning threads fighting them for the cores; comparable across busy runs.
- active: workers spin while the process lives.

The policy is read by the OpenMP runtime when torch loads, so it is set in the parent before any child
process starts (children are spawned and inherit the environment); the table and JSON name it.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os

POLICIES = {"inherit": None, "passive": "PASSIVE", "active": "ACTIVE"}


def add_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait-policy", choices=sorted(POLICIES), default="inherit",
                        help="OpenMP wait policy of the measured processes (see benchmarks/waitpolicy.py); "
                             "'passive' on a machine shared with other work")  # fmt: skip


def apply(policy: str) -> str:
    """Set the policy for child processes started from now on; returns its description for the table."""
    value = POLICIES[policy]
    if value is not None:
        os.environ["OMP_WAIT_POLICY"] = value
    return describe()


def describe() -> str:
    value = os.environ.get("OMP_WAIT_POLICY")
    return f"OMP_WAIT_POLICY={value}" if value else "OMP_WAIT_POLICY unset (GNU OpenMP: spin briefly, then sleep)"


def suffix(policy: str) -> str:
    """The results-file suffix: none for the default, else '-passive' / '-active'."""
    return "" if policy == "inherit" else f"-{policy}"


def positive_int(text: str) -> int:
    """argparse type of the child-process benchmarks' counts (lengths, contexts, batches, rounds, threads):
    a clear usage error for 0 or a negative number, not a traceback from deep inside a cell."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def output_folder(parser: argparse.ArgumentParser, out) -> None:
    """Make --out's folder before the cells run (minutes), so that a path that cannot be written is a
    usage error at once, not a traceback after the measurements."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"--out {out}: cannot make its folder {out.parent} ({err.strerror})")


def in_child(fn, *args):
    """fn(*args) in a fresh spawned process: its own OpenMP runtime, under the policy set for the cells
    (how both benchmarks measure the machine's rate before and after their cells)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)
