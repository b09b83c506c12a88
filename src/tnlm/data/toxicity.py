"""A bad-words filter: documents that use words from a configurable list too often are removed.
Latin-script entries match whole words, case-insensitively; CJK entries match as substrings. The ratio
is over the document's words in its language's segmentation, and each language may bring its own list
and thresholds (`languages: {zh: {words_file: ..., max_ratio: ...}}`): a word that is rude in one
language can be harmless in another."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tnlm.data.document import Document
from tnlm.data.language import PerLanguage, language_of, segment
from tnlm.data.step import Filter
from tnlm.data.text import CJK_RE
from tnlm.errors import DataError


def load_word_list(*, words: list[str] | None, words_file: str | None, where: str = "bad_words") -> list[str]:
    entries = list(words or [])
    if words_file:
        path = Path(words_file)
        if not path.is_file():
            raise DataError(f"{where}: word list {words_file!r} not found; give a file with one word a line")
        entries += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise DataError(f"{where} needs a word list: set `words: [...]` or `words_file: path` (one word a line)")
    return entries


def word_pattern(entries: list[str]) -> re.Pattern[str]:
    """One regex for the list: Latin-script entries as whole words, CJK entries as substrings."""
    latin = sorted((e for e in entries if not CJK_RE.search(e)), key=len, reverse=True)
    cjk = sorted((e for e in entries if CJK_RE.search(e)), key=len, reverse=True)
    parts = [r"(?<!\w)(?:" + "|".join(map(re.escape, latin)) + r")(?!\w)"] if latin else []
    parts += ["|".join(map(re.escape, cjk))] if cjk else []
    return re.compile("|".join(parts), re.IGNORECASE)


@dataclass(frozen=True)
class BadWordsOptions:
    words: tuple[str, ...] | list[str] | None = None
    words_file: str | None = None
    max_hits: int | None = None
    max_ratio: float | None = None


class BadWordsFilter(Filter):
    """Removes a document when bad words make up more than `max_ratio` of its words, or when it has
    more than `max_hits` of them (0 = any hit removes it; set one of the two)."""

    name = "bad_words"

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.options = PerLanguage(BadWordsOptions, options, builtin={}, configured=languages, step=self.name)
        self.patterns: dict[tuple, re.Pattern[str]] = {}
        for code, o in [(None, self.options.base), *self.options.by_language.items()]:
            key = (tuple(o.words or ()), o.words_file)
            if key not in self.patterns:
                where = "bad_words" if code is None else f"bad_words: languages.{code}"
                self.patterns[key] = word_pattern(load_word_list(words=o.words, words_file=o.words_file, where=where))

    def reject_reason(self, doc: Document) -> str | None:
        language = language_of(doc)
        o = self.options(language)
        hits = len(self.patterns[(tuple(o.words or ()), o.words_file)].findall(doc.text))
        if not hits:
            return None
        self.count("docs_with_bad_words")
        max_hits = o.max_hits if o.max_hits is not None or o.max_ratio is not None else 0
        if max_hits is not None and hits > max_hits:
            return "bad_words_count"
        if o.max_ratio is not None and hits / max(len(segment(doc.text, language)), 1) > o.max_ratio:
            return "bad_words_ratio"
        return None
