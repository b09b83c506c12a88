"""Heuristic quality rules in the style of Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and
FineWeb (Penedo et al. 2024). Default thresholds are the published ones; every one is an option.
Counting is CJK-aware (see `tnlm.data.text`): rules about English word shapes (mean word length,
stop words) apply only to documents that are not mostly CJK."""

from __future__ import annotations

import re

import numpy as np

from tnlm.data.document import Document
from tnlm.data.step import Filter, Step
from tnlm.data.text import CJK_RE, TERMINAL_PUNCT, cjk_fraction, combine_ngrams, lines, paragraphs, word_hashes, words

EN_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
ZH_STOP_WORDS = ("的", "是", "了", "在", "不", "之", "也", "而", "其", "有", "人", "我", "以")
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·")
LETTER_RE = re.compile(r"[^\W\d_]")
BOILERPLATE = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
               "all rights reserved", "javascript")


class LengthFilter(Filter):
    """Documents with fewer than `min_chars` or more than `max_chars` characters."""

    name = "length"

    def __init__(self, *, min_chars: int = 1, max_chars: int | None = None) -> None:
        super().__init__()
        self.min_chars, self.max_chars = min_chars, max_chars

    def reject_reason(self, doc: Document) -> str | None:
        if len(doc.text) < self.min_chars:
            return "too_short"
        if self.max_chars is not None and len(doc.text) > self.max_chars:
            return "too_long"
        return None


class GopherQuality(Filter):
    """Gopher's document rules: word-count bounds, mean word length, symbol-to-word ratio, bullet
    and ellipsis lines, words with letters, and stop words."""

    name = "gopher_quality"

    def __init__(self, *, min_words: int = 50, max_words: int = 100_000, min_mean_word_length: float = 3,
                 max_mean_word_length: float = 10, max_symbol_word_ratio: float = 0.1,
                 max_bullet_lines_ratio: float = 0.9, max_ellipsis_lines_ratio: float = 0.3,
                 min_alpha_words_ratio: float = 0.8, min_stop_words: int = 2) -> None:
        super().__init__()
        self.min_words, self.max_words = min_words, max_words
        self.word_length = (min_mean_word_length, max_mean_word_length)
        self.max_symbol_word_ratio, self.min_alpha_words_ratio = max_symbol_word_ratio, min_alpha_words_ratio
        self.max_bullet, self.max_ellipsis = max_bullet_lines_ratio, max_ellipsis_lines_ratio
        self.min_stop_words = min_stop_words

    def reject_reason(self, doc: Document) -> str | None:
        text, tokens = doc.text, words(doc.text)
        n = len(tokens)
        if n < max(self.min_words, 1):
            return "too_few_words"
        if n > self.max_words:
            return "too_many_words"
        cjk = cjk_fraction(tokens) > 0.5
        if not cjk and not self.word_length[0] <= sum(map(len, tokens)) / n <= self.word_length[1]:
            return "mean_word_length"
        if (text.count("#") + text.count("...") + text.count("…")) / n > self.max_symbol_word_ratio:
            return "symbol_word_ratio"
        doc_lines = lines(text)
        if sum(line.lstrip().startswith(BULLETS) for line in doc_lines) / len(doc_lines) > self.max_bullet:
            return "bullet_lines"
        if sum(line.rstrip().endswith(("...", "…")) for line in doc_lines) / len(doc_lines) > self.max_ellipsis:
            return "ellipsis_lines"
        if sum(1 for w in tokens if LETTER_RE.search(w)) / n < self.min_alpha_words_ratio:
            return "non_alpha_words"
        stop = ZH_STOP_WORDS if cjk else EN_STOP_WORDS
        if sum(1 for w in tokens if w.lower() in stop) < self.min_stop_words:
            return "few_stop_words"
        return None


def _duplicate_fraction(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of characters in them)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_items, dup_chars = dup_items + 1, dup_chars + len(item)
        seen.add(item)
    total_chars = sum(map(len, items)) or 1
    return dup_items / max(len(items), 1), dup_chars / total_chars


def _top_ngram_fraction(hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int) -> float:
    """Characters of the most frequent n-gram times its count, over all word characters."""
    if len(hashes) < n:
        return 0.0
    _, first, counts = np.unique(combine_ngrams(hashes, n), return_index=True, return_counts=True)
    top = int(counts.argmax())
    if counts[top] < 2:
        return 0.0
    return counts[top] * int(lengths[first[top] : first[top] + n].sum()) / total_chars


def _dup_ngram_fraction(hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int) -> float:
    """Characters covered by n-grams that occur more than once, over all word characters."""
    if len(hashes) < n:
        return 0.0
    _, inverse, counts = np.unique(combine_ngrams(hashes, n), return_inverse=True, return_counts=True)
    starts = np.flatnonzero(counts[inverse] > 1)
    if not len(starts):
        return 0.0
    delta = np.zeros(len(hashes) + 1, dtype=np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + n, -1)
    return int(lengths[np.cumsum(delta[:-1]) > 0].sum()) / total_chars


class GopherRepetition(Filter):
    """Gopher's repetition rules: duplicated lines and paragraphs (by count and by characters), the
    most frequent 2-4-gram, and characters covered by repeated 5-10-grams."""

    name = "gopher_repetition"

    def __init__(self, *, max_dup_line_fraction: float = 0.3, max_dup_para_fraction: float = 0.3,
                 max_dup_line_char_fraction: float = 0.2, max_dup_para_char_fraction: float = 0.2,
                 top_ngram_max: dict[int, float] | None = None, dup_ngram_max: dict[int, float] | None = None) -> None:
        super().__init__()
        self.line_max = (max_dup_line_fraction, max_dup_line_char_fraction)
        self.para_max = (max_dup_para_fraction, max_dup_para_char_fraction)
        self.top_ngram_max = top_ngram_max or {2: 0.20, 3: 0.18, 4: 0.16}
        self.dup_ngram_max = dup_ngram_max or {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}

    def reject_reason(self, doc: Document) -> str | None:
        for kind, items, limits in (("para", paragraphs(doc.text), self.para_max), ("line", lines(doc.text), self.line_max)):
            frac, char_frac = _duplicate_fraction(items)
            if frac > limits[0]:
                return f"dup_{kind}_fraction"
            if char_frac > limits[1]:
                return f"dup_{kind}_char_fraction"
        tokens = words(doc.text)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        total, hashes = int(lengths.sum()) or 1, word_hashes([w.lower() for w in tokens])
        for n, limit in sorted(self.top_ngram_max.items()):
            if _top_ngram_fraction(hashes, lengths, int(n), total) > limit:
                return f"top_{n}gram"
        for n, limit in sorted(self.dup_ngram_max.items()):
            if _dup_ngram_fraction(hashes, lengths, int(n), total) > limit:
                return f"dup_{n}gram"
        return None


class C4Quality(Step):
    """C4's rules: removes lines without terminal punctuation, with too few words, or of boilerplate
    (cookie/privacy notices, "javascript"), then removes documents with "lorem ipsum", curly braces
    (optional: they mark code) or too few sentences left."""

    name = "c4_quality"

    def __init__(self, *, min_words_per_line: int = 3, min_sentences: int = 3, drop_curly_braces: bool = True,
                 boilerplate: list[str] | None = None) -> None:
        super().__init__()
        self.min_words_per_line, self.min_sentences = min_words_per_line, min_sentences
        self.drop_curly_braces = drop_curly_braces
        self.boilerplate = tuple(boilerplate) if boilerplate is not None else BOILERPLATE

    def _keep_line(self, line: str) -> bool:
        stripped = line.strip()
        lower = stripped.lower()
        return (stripped.endswith(TERMINAL_PUNCT) and len(words(stripped)) >= self.min_words_per_line
                and not any(phrase in lower for phrase in self.boilerplate))

    def process(self, doc: Document) -> Document | None:
        lower = doc.text.lower()
        if "lorem ipsum" in lower:
            return self.drop(doc, "lorem_ipsum")
        if self.drop_curly_braces and "{" in doc.text:
            return self.drop(doc, "curly_braces")
        kept = [line for line in lines(doc.text) if self._keep_line(line)]
        self.count("lines_removed", len(lines(doc.text)) - len(kept))
        text = "\n".join(kept)
        sentences = sum(text.count(p) for p in (".", "!", "?", "。", "！", "？"))
        if sentences < self.min_sentences:
            return self.drop(doc, "too_few_sentences")
        doc.text = text
        return doc


class FineWebQuality(Filter):
    """FineWeb's rules: share of lines ending in punctuation, share of short lines, characters in
    duplicated lines, and newlines per word (list-like pages). A CJK character counts as 3 characters
    towards line length, since it carries about a word."""

    name = "fineweb_quality"

    def __init__(self, *, min_line_punct_ratio: float = 0.12, short_line_chars: int = 30,
                 max_short_line_ratio: float = 0.67, max_dup_line_char_ratio: float = 0.01,
                 max_newline_word_ratio: float = 0.3) -> None:
        super().__init__()
        self.min_line_punct_ratio, self.short_line_chars = min_line_punct_ratio, short_line_chars
        self.max_short_line_ratio, self.max_dup_line_char_ratio = max_short_line_ratio, max_dup_line_char_ratio
        self.max_newline_word_ratio = max_newline_word_ratio

    def reject_reason(self, doc: Document) -> str | None:
        doc_lines = [line.strip() for line in lines(doc.text)]
        if not doc_lines:
            return "empty"
        if sum(line.endswith(TERMINAL_PUNCT) for line in doc_lines) / len(doc_lines) < self.min_line_punct_ratio:
            return "line_punct_ratio"
        width = [len(line) + 2 * len(CJK_RE.findall(line)) for line in doc_lines]
        if sum(w <= self.short_line_chars for w in width) / len(doc_lines) > self.max_short_line_ratio:
            return "short_line_ratio"
        if _duplicate_fraction(doc_lines)[1] > self.max_dup_line_char_ratio:
            return "dup_line_chars"
        if doc.text.count("\n") / max(len(words(doc.text)), 1) > self.max_newline_word_ratio:
            return "newline_word_ratio"
        return None
