"""File-system helpers shared by every layer.

`tempfile` creates files 0600 and folders 0700, whatever the user's umask: an output written to a
temporary path and renamed into place would stay private. `follow_umask` gives such a path the mode
a plain `open()` or `mkdir()` would have given it."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (no race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: str | Path, *, directory: bool = False) -> None:
    """chmod a file made by tempfile to 0666, or a folder to 0777, less the umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


def expand_home(value: object) -> object:
    """Config values with `~` expanded as a shell would: a string "~" or starting "~/" (or "~user/")
    becomes the home folder's path; lists and mappings are expanded item by item, other values kept.
    YAML configs and `key=value` overrides reach tnlm without passing through a shell."""
    if isinstance(value, str):
        return os.path.expanduser(value) if value.startswith("~") else value
    if isinstance(value, list):
        return [expand_home(v) for v in value]
    if isinstance(value, dict):
        return {k: expand_home(v) for k, v in value.items()}
    return value
