"""Which files a list of inputs names, and the check that keeps a run from reading its own output.

- A path that exists is taken as it is, even when its name holds glob characters (`x[1].jsonl`).
- A path that does not exist and holds a wildcard (`*`, `?`, `[...]`) is a glob pattern; `**` spans any
  number of folders. To match a name holding `[` by pattern, escape it in brackets: `x[[]1].jsonl`
  (what Python's `glob.escape` writes).
- A folder is searched recursively for files with a known data suffix.

Inside a folder, and below the fixed part of a pattern, tnlm leaves out hidden and "_"-prefixed entries
(a pipeline's `_work` and `_stats`), the reports and markers it writes (report.json, meta.json,
pack.json), and folders that hold another tnlm run's output (a pipeline's output folder, packed token
shards); a warning names each such folder. Name an output folder itself to read its documents."""

from __future__ import annotations

import glob
import logging
import os
import re
from functools import lru_cache
from pathlib import Path, PurePath

from tnlm.errors import DataError

log = logging.getLogger(__name__)

WILDCARD_RE = re.compile(r"[*?[]")
PIPELINE_MARKER = Path("_work") / "config.json"  # written first by every pipeline run
PACK_MARKER = "pack.json"  # written first by `pack`
OWN_FILES = ("report.json", "meta.json", PACK_MARKER)


def tnlm_output_kind(folder: Path) -> str | None:
    """What tnlm run wrote `folder`, if one did."""
    if (folder / PIPELINE_MARKER).is_file():
        return "a data pipeline's output"
    if (folder / PACK_MARKER).is_file():
        return "packed token shards"
    return None


def base_suffix(path: str) -> str:
    """The suffix under a compression suffix: "a.jsonl.gz" -> ".jsonl"."""
    name = path.lower()
    for codec in (".gz", ".zst", ".zstd"):
        name = name.removesuffix(codec)
    return os.path.splitext(name)[1]


@lru_cache(maxsize=None)
def _warn_skipping(folder: Path, kind: str) -> None:
    log.warning("skipping %s: it holds %s, not input documents (name it to read it)", folder, kind)


def _own(name: str) -> bool:
    return name.startswith(("_", ".")) or name in OWN_FILES


def _skipped(path: Path, root: Path) -> bool:
    """Whether a file below `root` is tnlm's own bookkeeping or lies in another run's output."""
    parts = path.relative_to(root).parts
    if any(map(_own, parts)):
        return True
    for depth in range(1, len(parts)):
        folder = root.joinpath(*parts[:depth])
        if kind := tnlm_output_kind(folder):
            _warn_skipping(folder, kind)
            return True
    return False


def _folder_files(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    files = []
    for here, dirs, names in os.walk(folder, followlinks=True):
        keep = []
        for name in dirs:
            if not _own(name) and (kind := tnlm_output_kind(Path(here, name))):
                _warn_skipping(Path(here, name), kind)
            elif not _own(name):
                keep.append(name)
        dirs[:] = keep
        files += [Path(here, n) for n in names if not _own(n) and base_suffix(n) in suffixes]
    return [str(p) for p in sorted(files)]


def fixed_prefix(pattern: str) -> Path:
    """The folders of a pattern before its first wildcard: "data/*/x.jsonl" -> "data"."""
    parts = Path(pattern).parts
    n = next(i for i, part in enumerate(parts) if WILDCARD_RE.search(part))
    return Path(*parts[:n]) if n else Path(".")


def _glob_files(pattern: str, suffixes: tuple[str, ...]) -> list[str]:
    root, found = fixed_prefix(pattern), []
    for match in map(Path, sorted(glob.glob(pattern, recursive=True))):
        if match.is_dir():
            found += _folder_files(match, suffixes)
        elif not _skipped(match, root):
            found.append(str(match))
    return found


def expand_paths(patterns: list[str], *, suffixes: tuple[str, ...]) -> list[str]:
    """The files that paths, folders (searched for files with `suffixes`) and glob patterns name."""
    found: list[str] = []
    for pattern in patterns:
        if os.path.isdir(pattern):
            matches = _folder_files(Path(pattern), suffixes)
        elif os.path.exists(pattern):
            matches = [pattern]
        elif WILDCARD_RE.search(pattern):
            matches = _glob_files(pattern, suffixes)
        else:
            raise DataError(f"input {pattern!r} does not exist: check the path (globs like 'data/*.jsonl.gz' work)")
        if not matches:
            raise DataError(f"no input files match {pattern!r}: check the path (globs like 'data/*.jsonl.gz' work)")
        found.extend(m for m in matches if m not in found)
    return found


def _related(a: Path, b: Path) -> bool:
    return a == b or a in b.parents or b in a.parents


def could_read(pattern: str, folder: str | Path, samples: list[str]) -> bool:
    """Whether input `pattern` names `folder`, a folder around it, or a file inside it, now or once the
    folder holds files named like `samples`."""
    folder = Path(os.path.realpath(folder))
    if os.path.exists(pattern) or not WILDCARD_RE.search(pattern):
        return _related(Path(os.path.realpath(pattern)), folder)
    root = Path(os.path.realpath(fixed_prefix(pattern)))
    if not _related(root, folder):
        return False
    if "**" in pattern or any(_related(Path(os.path.realpath(m)), folder) for m in glob.glob(pattern)):
        return True
    full = str(root.joinpath(*Path(pattern).parts[len(fixed_prefix(pattern).parts) :]))
    return any(PurePath(folder / name).match(full) for name in samples)


def check_not_reading(patterns: list[str], output: str | Path, samples: list[str]) -> None:
    """Refuse an output folder that the inputs name or contain: a rerun would read its files back in."""
    for pattern in patterns:
        if could_read(pattern, output, samples):
            raise DataError(f"the input {pattern!r} and the output folder {output} overlap: a rerun would read the "
                            "run's own output as input; put the output outside the inputs")
