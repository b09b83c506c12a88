"""File-system helpers shared by every layer.

`tempfile` creates files 0600 and folders 0700, whatever the user's umask: an output written to a
temporary path and renamed into place would stay private. `follow_umask` gives such a path the mode
a plain `open()` or `mkdir()` would have given it. `atomic_path` writes through such a temporary path,
`remove_unfinished` deletes what a killed writer left, and `compile_cache_dir` is where tnlm keeps what
it compiles (decode steps, C kernels)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside `path` (named .{name}.XXXX{suffix}); on success rename it onto `path`,
    on error delete it. A killed run leaves either the old file or the complete new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    follow_umask(tmp)  # the renamed file gets the mode open() would give it, not mkstemp's 0600
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_unfinished(path: str | Path) -> None:
    """Delete the temporary files atomic_path(path) left when its process was killed before the rename
    (SIGKILL, or SIGTERM without a handler): a folder holding only such a file holds no data."""
    path = Path(path)
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        stale.unlink(missing_ok=True)


COMPILE_CACHE_ENV = "TNLM_COMPILE_CACHE"
_OFF = {"", "0", "off", "no", "none", "false"}


def compile_cache_dir() -> Path | None:
    """Where compiled decode steps (and, in its subfolder "kernels", the decode step's C kernels) are
    kept: TNLM_COMPILE_CACHE, else $XDG_CACHE_HOME/tnlm/compiled-steps, else ~/.cache/...; None when
    TNLM_COMPILE_CACHE turns the cache off."""
    value = os.environ.get(COMPILE_CACHE_ENV)
    if value is not None:
        return None if value.strip().lower() in _OFF else Path(value).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tnlm" / "compiled-steps"
