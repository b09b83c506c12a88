"""Step names used in pipeline YAML files, and building a step from its YAML entry."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any

from tnlm.data.decontam import Decontaminate
from tnlm.data.dedup import ExactDedup, MinHashDedup
from tnlm.data.langid import LanguageID
from tnlm.errors import DataError
from tnlm.data.normalize import Normalize
from tnlm.data.perplexity import PerplexityFilter, PerplexityTail
from tnlm.data.pii import PIIMasker
from tnlm.data.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition, LengthFilter
from tnlm.data.step import Step
from tnlm.data.toxicity import BadWordsFilter

STEPS: dict[str, type[Step]] = {
    cls.name: cls
    for cls in (Normalize, LanguageID, LengthFilter, GopherQuality, GopherRepetition, C4Quality, FineWebQuality, ExactDedup,
                MinHashDedup, PIIMasker, BadWordsFilter, Decontaminate, PerplexityFilter, PerplexityTail)
}


def build_step(entry: dict[str, Any]) -> Step:
    """Build a step from `{"step": NAME, **options}`."""
    if not isinstance(entry, dict) or "step" not in entry:
        raise DataError(f"each pipeline step needs a `step:` name, got {entry!r}")
    options = {k: v for k, v in entry.items() if k != "step"}
    name = entry["step"]
    if name not in STEPS:
        raise DataError(f"unknown step {name!r}; known steps: {', '.join(sorted(STEPS))}")
    check_option_types(STEPS[name], options, step=name)
    try:
        return STEPS[name](**options)
    except TypeError as err:
        raise DataError(f"bad options for step {name!r}: {err}") from err
    except ValueError as err:
        raise DataError(f"step {name!r}: {err}") from err


def check_option_types(cls: type[Step], options: dict[str, Any], *, step: str) -> None:
    """Refuse an option whose YAML value has the wrong type (`min_words: abc`) before the step is built,
    from the annotations of the step's keyword parameters and of its options dataclass (`OPTIONS`)."""
    hints = _option_hints(cls)
    for where, values in [("", options)] + _per_language(options, step):
        for key, value in values.items():
            hint = hints.get(key)
            if hint is not None and not _matches(value, hint):
                raise DataError(f"step {step!r}: option {where}{key} must be {_describe(hint)}, got {value!r}")


def _option_hints(cls: type) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    init = cls.__init__
    annotations = typing.get_type_hints(init)
    for param in inspect.signature(init).parameters.values():
        if param.kind is param.KEYWORD_ONLY and param.name in annotations and param.name != "languages":
            hints[param.name] = annotations[param.name]
    options_class = getattr(cls, "OPTIONS", None)
    if options_class is not None and dataclasses.is_dataclass(options_class):
        hints.update(typing.get_type_hints(options_class))
    return hints


def _per_language(options: dict[str, Any], step: str) -> list[tuple[str, dict[str, Any]]]:
    languages = options.get("languages")
    if not isinstance(languages, dict):
        return []
    return [(f"languages.{code}.", values) for code, values in languages.items() if isinstance(values, dict)]


def _matches(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin in (list, tuple):  # YAML gives lists for both
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if origin is typing.Literal:
        return value in args
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(dict.fromkeys(_describe(arg) for arg in args))
    if hint is type(None):
        return "null"
    if origin in (list, tuple):
        return f"a list of {_describe(args[0]) if args else 'values'}"
    if origin is dict:
        return "a mapping"
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
