"""Step names used in pipeline YAML files, and building a step from its YAML entry."""

from __future__ import annotations

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
    try:
        return STEPS[name](**options)
    except TypeError as err:
        raise DataError(f"bad options for step {name!r}: {err}") from err
    except ValueError as err:
        raise DataError(f"step {name!r}: {err}") from err
