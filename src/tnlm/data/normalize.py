"""Unicode and whitespace normalisation."""

from __future__ import annotations

import re
import unicodedata

from tnlm.data.step import Mapper

# control characters except tab and newline, zero-width characters and the byte-order mark
INVISIBLE_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u200b-\u200d\u2060\ufeff]")
SPACES_RE = re.compile("[ \t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]+")
TRAILING_RE = re.compile(r"[ \t]+\n")
MANY_NEWLINES_RE = re.compile(r"\n{3,}")


class Normalize(Mapper):
    """Unicode normal form (NFC keeps full-width CJK punctuation; NFKC folds it), drops control and
    zero-width characters, folds space runs, strips line ends and keeps at most one blank line."""

    name = "normalize"

    def __init__(self, *, form: str = "NFC", collapse_spaces: bool = True) -> None:
        super().__init__()
        if form not in ("NFC", "NFKC", "NFD", "NFKD"):
            raise ValueError(f"form must be NFC, NFKC, NFD or NFKD, not {form!r}")
        self.form, self.collapse_spaces = form, collapse_spaces

    def transform(self, text: str) -> str:
        text = unicodedata.normalize(self.form, text.replace("\r\n", "\n").replace("\r", "\n"))
        text = INVISIBLE_RE.sub("", text)
        if self.collapse_spaces:
            text = SPACES_RE.sub(" ", text)
        text = TRAILING_RE.sub("\n", text)
        return MANY_NEWLINES_RE.sub("\n\n", text).strip()
