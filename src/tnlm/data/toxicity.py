"""A bad-words filter: documents that use words from a configurable list too often are removed.
Latin-script entries match whole words, case-insensitively; CJK entries match as substrings."""

from __future__ import annotations

import re
from pathlib import Path

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.step import Filter
from tnlm.data.text import CJK_RE, words


def load_word_list(*, words: list[str] | None, words_file: str | None) -> list[str]:
    entries = list(words or [])
    if words_file:
        path = Path(words_file)
        if not path.is_file():
            raise DataError(f"bad_words: word list {words_file!r} not found; give a file with one word a line")
        entries += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [e for e in entries if e and not e.startswith("#")]
    if not entries:
        raise DataError("bad_words needs a word list: set `words: [...]` or `words_file: path` (one word a line)")
    return entries


class BadWordsFilter(Filter):
    """Removes a document when bad words make up more than `max_ratio` of its words, or when it has
    more than `max_hits` of them (0 = any hit removes it; set one of the two)."""

    name = "bad_words"

    def __init__(self, *, words: list[str] | None = None, words_file: str | None = None,
                 max_hits: int | None = None, max_ratio: float | None = None) -> None:
        super().__init__()
        entries = load_word_list(words=words, words_file=words_file)
        latin = sorted((e for e in entries if not CJK_RE.search(e)), key=len, reverse=True)
        cjk = sorted((e for e in entries if CJK_RE.search(e)), key=len, reverse=True)
        parts = [r"(?<!\w)(?:" + "|".join(map(re.escape, latin)) + r")(?!\w)"] if latin else []
        parts += ["|".join(map(re.escape, cjk))] if cjk else []
        self.pattern = re.compile("|".join(parts), re.IGNORECASE)
        self.max_hits = max_hits if max_hits is not None or max_ratio is not None else 0
        self.max_ratio = max_ratio

    def reject_reason(self, doc: Document) -> str | None:
        hits = len(self.pattern.findall(doc.text))
        if hits:
            self.count("docs_with_bad_words")
        if self.max_hits is not None and hits > self.max_hits:
            return "bad_words_count"
        if self.max_ratio is not None and hits / max(len(words(doc.text)), 1) > self.max_ratio:
            return "bad_words_ratio"
        return None
