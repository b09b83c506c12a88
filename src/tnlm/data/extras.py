"""The optional packages (the `data` extra) a data command needs, checked before it does any work, so
that a missing one is named in one line instead of failing with a traceback halfway through."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from typing import Any

from tnlm.errors import DataError

INSTALL = "pip install 'tnlm[data]'"
WORD_RULES = ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality", "bad_words")
# the language-aware rules split any Chinese text they meet with rjieba
STEP_MODULES = {"language_id": ("py3langid",), **{name: ("rjieba",) for name in WORD_RULES}}
SOURCE_MODULES = {"hf": ("datasets",)}
ENGINE_MODULES = {"datatrove": ("datatrove", "orjson")}
SUFFIX_MODULES = {".zst": ("zstandard",), ".zstd": ("zstandard",), ".parquet": ("pyarrow",)}
COMPRESSION_MODULES = {"zstd": ("zstandard",)}


def _available(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    return importlib.util.find_spec(module) is not None


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def modules_for_paths(paths: Iterable[str]) -> set[str]:
    """What reading these files (or globs) needs: zstandard for .zst, pyarrow for Parquet."""
    return {m for p in paths for suffix, mods in SUFFIX_MODULES.items() if p.lower().endswith(suffix) for m in mods}


def modules_for_pipeline(config: dict[str, Any], *, engine: str = "tnlm") -> set[str]:
    """What a pipeline config (as in its YAML) needs, for its steps, source, files and engine."""
    needed = set(ENGINE_MODULES.get(engine, ()))
    source = config.get("source")
    needed.update(SOURCE_MODULES.get(str(source.get("type", "files")) if isinstance(source, dict) else "", ()))
    needed.update(COMPRESSION_MODULES.get(str(config.get("compression")), ()))
    for step in config.get("steps") or []:
        if isinstance(step, dict):
            needed.update(STEP_MODULES.get(str(step.get("step")), ()))
    needed.update(modules_for_paths(_strings(config)))
    return needed


def require(modules: Iterable[str], *, what: str) -> None:
    """Raise DataError naming the missing packages and the command that installs them."""
    missing = sorted(m for m in modules if not _available(m))
    if missing:
        raise DataError(f"{what} needs {', '.join(missing)}, not installed here: {INSTALL}")
