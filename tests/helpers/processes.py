"""Helpers for the tests that drive real `tnlm` processes: a marker every descendant inherits, the live
processes that carry it, and deadlines that grow with the machine's load."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

STOP_LIMIT = 10.0  # seconds from Ctrl-C to exit on an idle machine; measured stops are well under 1 s


def load_factor() -> float:
    """How much slower than idle this machine runs now: runnable processes per core (the last
    minute's load average), at least 1. Deadlines are multiplied by it, so that a busy machine
    (CI, or other jobs) gets more time, while a hang still fails."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average on this platform
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def scaled(seconds: float) -> float:
    """`seconds` on an idle machine, stretched by the current load (see load_factor)."""
    return seconds * load_factor()


def stop_limit() -> float:
    """Seconds a Ctrl-C'd command may take to exit now."""
    return scaled(STOP_LIMIT)


def wait_until(ready: Callable[[], bool], *, timeout: float, what: str, alive: Callable[[], bool] | None = None) -> None:
    """Poll `ready` every 10 ms until it holds or `alive` turns false (the process ended); a failed
    assertion after `timeout` seconds (scaled by the load at the start)."""
    deadline = time.monotonic() + scaled(timeout)
    while not ready():
        if alive is not None and not alive():
            return
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def as_in_a_terminal() -> None:
    """`preexec_fn` of a command the test will Ctrl-C: SIGINT at its default, as in a terminal's
    foreground job. A test run started in the background (`pytest &`, `.ci/run &` from a script)
    ignores SIGINT, every child inherits that through exec, and Python then installs no Ctrl-C
    handler: the command would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def marked_env() -> tuple[dict[str, str], str]:
    """An environment whose marker every descendant process inherits, whatever its process group."""
    marker = f"TNLM_TEST_PROCESS={uuid.uuid4().hex}"
    key, value = marker.split("=")
    return {**os.environ, key: value}, marker


def marked_processes(marker: str) -> list[str]:
    """Live processes that carry the marker in their environment, as 'pid command'."""
    return [f"{pid} {name}" for pid, name in _marked(marker)]


def marked_pids(marker: str) -> list[int]:
    """The process ids of `marked_processes`."""
    return [pid for pid, _ in _marked(marker)]


def _marked(marker: str) -> list[tuple[int, str]]:
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() not in environ.read_bytes().split(b"\0"):
                continue
            stat = (environ.parent / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            found.append((int(environ.parent.name), stat[: stat.rindex(")") + 1]))
    return found


def wait_gone(marker: str, *, timeout: float = 10.0) -> None:
    """Wait until no live process carries the marker (a killed process group takes a moment to die,
    and its forked workers hold its open files, locks included, until then)."""
    try:
        wait_until(lambda: not marked_processes(marker), timeout=timeout, what="processes to exit")
    except AssertionError:  # name the ones still alive now, not those of the start
        raise AssertionError(f"timed out waiting for processes to exit: {marked_processes(marker)}") from None
