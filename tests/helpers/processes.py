"""Helpers for the tests that drive real `tnlm` processes: a marker every descendant inherits, and the
live processes that carry it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

STOP_LIMIT = 10.0  # seconds from Ctrl-C to exit; measured stops are well under 1 s


def marked_env() -> tuple[dict[str, str], str]:
    """An environment whose marker every descendant process inherits, whatever its process group."""
    marker = f"TNLM_TEST_PROCESS={uuid.uuid4().hex}"
    key, value = marker.split("=")
    return {**os.environ, key: value}, marker


def marked_processes(marker: str) -> list[str]:
    """Live processes that carry the marker in their environment, as 'pid command'."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() not in environ.read_bytes().split(b"\0"):
                continue
            stat = (environ.parent / "stat").read_text()
        except OSError:
            continue
        if stat[stat.rindex(")") + 2] != "Z":
            found.append(f"{environ.parent.name} {stat[: stat.rindex(')') + 1]}")
    return found
