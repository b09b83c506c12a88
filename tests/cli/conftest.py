"""Helpers for the CLI tests that drive real `tnlm` processes."""

from __future__ import annotations

from pathlib import Path

STOP_LIMIT = 10.0  # seconds from Ctrl-C to exit; measured stops are well under 1 s


def group_members(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group, as 'pid state command'."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name_end = text.rindex(")")
        state, _, pgrp = text[name_end + 2 :].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            found.append(f"{stat.parent.name} {state} {text[: name_end + 1]}")
    return found
