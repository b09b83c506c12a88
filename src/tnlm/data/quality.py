"""Heuristic quality rules in the style of Gopher (Rae et al. 2021), C4 (Raffel et al. 2020) and
FineWeb (Penedo et al. 2024), language-aware.

Each rule counts words with its document's language's segmentation (`tnlm.data.language`) and takes
its thresholds per language: the published ones for English and every language without its own, the
built-in Chinese and Japanese ones below (Chinese measured on real prose and poetry, see the data
README and benchmarks/data_thresholds.py), and any the config gives as `languages: {code: {...}}`.

A rule's `checks(text, language)` yields (reason, measured value, failed) one rule at a time, so
`reject_reason` stops at the first failure and `measure` reports every value with the same code."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np

from tnlm.data.document import Document
from tnlm.data.language import PerLanguage, language_of, segment
from tnlm.data.step import Filter, Step
from tnlm.data.text import TERMINAL_PUNCT, combine_ngrams, lines, paragraphs

STOP_WORDS = {
    None: ("the", "be", "to", "of", "and", "that", "have", "with"),  # untagged text: English
    "en": ("the", "be", "to", "of", "and", "that", "have", "with"),
    "zh": ("的", "是", "了", "在", "不", "之", "也", "而", "其", "有", "人", "我", "以", "者", "于", "於", "为", "為",
           "与", "與", "无", "無"),
    "ja": ("の", "に", "は", "を", "た", "が", "で", "て", "と", "し", "れ", "さ", "な", "も"),
}
BULLETS = ("•", "●", "○", "■", "□", "▪", "▫", "–", "-", "*", "·")
LETTER_RE = re.compile(r"[^\W\d_]")
LINE_WITH_LETTER_RE = re.compile(r"^.*?[^\W\d_]", re.MULTILINE)

RUN_RE = re.compile(r"[^\W_]+")  # letters and digits between spaces and punctuation
BOILERPLATE = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
               "all rights reserved", "javascript")
SENTENCE_ENDS = (".", "!", "?", "。", "！", "？")
SENTENCE_RE = re.compile(r"[。！？；!?;\n]+")
LIST_COMMA_RE = re.compile(r"[，、,]")

Check = tuple[str, float, bool]  # (reason, measured value, failed)


class LanguageRule:
    """Mixin: thresholds per language (`OPTIONS`, a dataclass; `BUILTIN`, values for some languages)."""

    OPTIONS: ClassVar[type]
    BUILTIN: ClassVar[dict[str, dict[str, Any]]] = {}
    name: ClassVar[str]

    def init_options(self, options: dict[str, Any], languages: dict[str, Any] | None) -> None:
        self.options = PerLanguage(self.OPTIONS, options, builtin=self.BUILTIN, configured=languages, step=self.name)

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        raise NotImplementedError

    def measure(self, text: str, language: str | None) -> dict[str, float]:
        """Every value the rule compares with a threshold, for `text` in `language`."""
        return {reason: value for reason, value, _ in self.checks(text, language)}

    def first_failure(self, doc: Document) -> str | None:
        return next((reason for reason, _, failed in self.checks(doc.text, language_of(doc)) if failed), None)


@dataclass(frozen=True)
class LengthOptions:
    min_chars: int = 1
    max_chars: int | None = None


class LengthFilter(LanguageRule, Filter):
    """Documents with fewer than `min_chars` or more than `max_chars` characters."""

    name = "length"
    OPTIONS = LengthOptions

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.init_options(options, languages)

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        o = self.options(language)
        yield "too_short", len(text), len(text) < o.min_chars
        yield "too_long", len(text), o.max_chars is not None and len(text) > o.max_chars

    def reject_reason(self, doc: Document) -> str | None:
        return self.first_failure(doc)


@dataclass(frozen=True)
class GopherQualityOptions:
    min_words: int = 50
    max_words: int = 100_000
    min_mean_word_length: float | None = 3  # None: no bound (Chinese and Japanese words are 1-2 characters)
    max_mean_word_length: float | None = 10
    max_mean_clause_chars: float | None = None  # runs between spaces and punctuation; for CJK, clauses
    max_symbol_word_ratio: float = 0.1
    max_bullet_lines_ratio: float = 0.9
    max_ellipsis_lines_ratio: float = 0.3
    min_alpha_words_ratio: float = 0.8
    min_stop_words: int = 2
    stop_words: tuple[str, ...] | list[str] | None = None  # None: the language's own list (none: rule off)
    max_keyword_list_ratio: float | None = None  # share of characters in keyword-list sentences; None: off
    keyword_list_min_items: int = 6  # a keyword-list sentence: this many comma-separated items or more,
    keyword_list_max_item_chars: float = 8  # ... of at most this many characters on average


class GopherQuality(LanguageRule, Filter):
    """Gopher's document rules: word-count bounds, mean word length, symbol-to-word ratio, bullet
    and ellipsis lines, words with letters, and stop words. For Chinese and Japanese, where a word is
    one or two characters whatever the text, the mean length of the runs between punctuation marks
    (clauses) stands in for the mean word length: keyword run-ons are 25+ characters long, prose and
    poetry clauses 3-7."""

    name = "gopher_quality"
    OPTIONS = GopherQualityOptions
    # Chinese: measured (no stop words at all on 4 of 305 pages of classical poetry; clauses: clean <= 7
    # characters, keyword run-ons >= 25). Japanese: not measured (no corpus here); particles are in every
    # sentence and kana make clauses longer.
    # Keyword lists (SEO lines of short items between commas): see `keyword_list_ratio`; measured on the
    # Chinese of ../shared/data (benchmarks/data_thresholds.py): clean chapters and pages at most 0.14.
    BUILTIN = {"zh": {"min_mean_word_length": None, "max_mean_word_length": None, "max_mean_clause_chars": 12,
                      "min_stop_words": 0, "max_keyword_list_ratio": 0.5},
               "ja": {"min_mean_word_length": None, "max_mean_word_length": None, "max_mean_clause_chars": 20,
                      "min_stop_words": 2}}

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.init_options(options, languages)

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        o = self.options(language)
        tokens = segment(text, language)
        n = len(tokens)
        yield "too_few_words", n, n < max(o.min_words, 1)
        yield "too_many_words", n, n > o.max_words
        if not n:
            return
        mean = sum(map(len, tokens)) / n
        low, high = o.min_mean_word_length, o.max_mean_word_length
        yield "mean_word_length", mean, (low is not None and mean < low) or (high is not None and mean > high)
        if o.max_mean_clause_chars is not None:
            runs = RUN_RE.findall(text)
            clause = sum(map(len, runs)) / max(len(runs), 1)
            yield "long_clauses", clause, clause > o.max_mean_clause_chars
        symbols = (text.count("#") + text.count("...") + text.count("…")) / n
        yield "symbol_word_ratio", symbols, symbols > o.max_symbol_word_ratio
        n_lines, n_bullets, n_ellipsis = line_counts(text)
        bullets = n_bullets / n_lines
        yield "bullet_lines", bullets, bullets > o.max_bullet_lines_ratio
        ellipsis = n_ellipsis / n_lines
        yield "ellipsis_lines", ellipsis, ellipsis > o.max_ellipsis_lines_ratio
        alpha = alpha_words(tokens) / n
        yield "non_alpha_words", alpha, alpha < o.min_alpha_words_ratio
        stop_words = o.stop_words if o.stop_words is not None else STOP_WORDS.get(language, ())
        if stop_words:
            found = sum(map(frozenset(stop_words).__contains__, map(str.lower, tokens)))
            yield "few_stop_words", found, found < o.min_stop_words
        if o.max_keyword_list_ratio is not None:
            ratio = keyword_list_ratio(text, min_items=o.keyword_list_min_items, max_item_chars=o.keyword_list_max_item_chars,
                                       stop_words=tuple(stop_words))
            yield "keyword_list", ratio, ratio > o.max_keyword_list_ratio

    def reject_reason(self, doc: Document) -> str | None:
        return self.first_failure(doc)


def keyword_list_ratio(text: str, *, min_items: int, max_item_chars: float, stop_words: tuple[str, ...] = ()) -> float:
    """The share of the characters of `text` in sentences that are keyword lists: at least `min_items`
    items between commas (，、,), averaging at most `max_item_chars` characters, at most a third of them
    holding one of `stop_words` (keywords are bare nouns; the short parallel clauses of prose hold
    particles). Sentences end at 。！？；, their ASCII forms, or a line end."""
    has_stop_word = _any_of(stop_words)
    total = listed = 0
    for sentence in SENTENCE_RE.split(text):
        sentence = sentence.strip()
        total += len(sentence)
        items = [item for item in LIST_COMMA_RE.split(sentence) if item.strip()]
        if len(items) < min_items or sum(map(len, items)) > max_item_chars * len(items):
            continue
        if has_stop_word is None or 3 * sum(1 for item in items if has_stop_word.search(item)) <= len(items):
            listed += len(sentence)
    return listed / max(total, 1)


@lru_cache(maxsize=32)
def _any_of(words: tuple[str, ...]) -> re.Pattern | None:
    return re.compile("|".join(map(re.escape, sorted(words, key=len, reverse=True)))) if words else None


def line_counts(text: str) -> tuple[int, int, int]:
    """(non-blank lines, bullet lines, ellipsis lines)."""
    doc_lines = lines(text)
    ellipses = sum(line.rstrip().endswith(("...", "…")) for line in doc_lines) if "..." in text or "…" in text else 0
    return len(doc_lines), sum(line.lstrip().startswith(BULLETS) for line in doc_lines), ellipses


def alpha_words(tokens: list[str]) -> int:
    """How many of `tokens` hold a letter: one regex pass over them joined by newlines (no word has one)."""
    return len(LINE_WITH_LETTER_RE.findall("\n".join(tokens)))


def alpha_words_reference(tokens: list[str]) -> int:
    return sum(1 for w in tokens if LETTER_RE.search(w))


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
    best = int(counts.max())
    if best < 2:
        return 0.0
    start = int(first[counts == best].min())  # of n-grams tied for the top, the first seen (not the smallest hash)
    return best * int(lengths[start : start + n].sum()) / total_chars


def _dup_ngram_fraction(hashes: np.ndarray, lengths: np.ndarray, n: int, total_chars: int) -> float:
    """Characters covered by n-grams that occur more than once, over all word characters: the n-grams
    sorted, each equal to a neighbour is repeated; their spans counted with two bincounts."""
    if len(hashes) < n:
        return 0.0
    grams = combine_ngrams(hashes, n)
    order = np.argsort(grams)
    ordered = grams[order]
    same = ordered[1:] == ordered[:-1]
    repeated = np.zeros(len(grams), dtype=bool)
    repeated[1:] = same
    repeated[:-1] |= same
    starts = order[repeated]
    if not len(starts):
        return 0.0
    size = len(hashes) + 1
    depth = np.cumsum(np.bincount(starts, minlength=size) - np.bincount(starts + n, minlength=size))
    return int(lengths[depth[:-1] > 0].sum()) / total_chars


def ngram_fractions_reference(tokens: list[str], n: int) -> tuple[float, float]:
    """(top n-gram fraction, repeated n-gram fraction) with tuples and a Counter: the reference for
    `_top_ngram_fraction` and `_dup_ngram_fraction` (ties for the top n-gram go to the first seen)."""
    from collections import Counter

    lower = [w.lower() for w in tokens]
    total = sum(map(len, tokens)) or 1
    grams = [tuple(lower[i : i + n]) for i in range(len(tokens) - n + 1)]
    counts = Counter(grams)
    if not grams:
        return 0.0, 0.0
    top_gram, top_count = max(counts.items(), key=lambda kv: (kv[1], -grams.index(kv[0])))
    start = grams.index(top_gram)
    top = top_count * sum(map(len, tokens[start : start + n])) / total if top_count > 1 else 0.0
    covered = set()
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered.update(range(i, i + n))
    return top, sum(len(tokens[i]) for i in covered) / total


@dataclass(frozen=True)
class GopherRepetitionOptions:
    max_dup_line_fraction: float = 0.3
    max_dup_para_fraction: float = 0.3
    max_dup_line_char_fraction: float = 0.2
    max_dup_para_char_fraction: float = 0.2
    top_ngram_max: dict[int, float] = field(default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16})
    dup_ngram_max: dict[int, float] = field(default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11,
                                                                     10: 0.10})


class GopherRepetition(LanguageRule, Filter):
    """Gopher's repetition rules: duplicated lines and paragraphs (by count and by characters), the
    most frequent 2-4-gram, and characters covered by repeated 5-10-grams."""

    name = "gopher_repetition"
    OPTIONS = GopherRepetitionOptions
    BUILTIN = {code: {"top_ngram_max": {2: 0.20, 3: 0.22, 4: 0.25},
                      "dup_ngram_max": {5: 0.45, 6: 0.40, 7: 0.35, 8: 0.35, 9: 0.35, 10: 0.35},
                      "max_dup_line_char_fraction": 0.2} for code in ("zh", "ja")}

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.init_options(options, languages)

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        o = self.options(language)
        for kind, items, limits in (("para", paragraphs(text), (o.max_dup_para_fraction, o.max_dup_para_char_fraction)),
                                    ("line", lines(text), (o.max_dup_line_fraction, o.max_dup_line_char_fraction))):
            frac, char_frac = _duplicate_fraction(items)
            yield f"dup_{kind}_fraction", frac, frac > limits[0]
            yield f"dup_{kind}_char_fraction", char_frac, char_frac > limits[1]
        tokens = segment(text, language)
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        # within one document any fixed hash will do: Python's own, in C
        hashes = np.fromiter(map(hash, map(str.lower, tokens)), dtype=np.int64, count=len(tokens)).view(np.uint64)
        total = int(lengths.sum()) or 1
        for n, limit in sorted(o.top_ngram_max.items(), key=lambda item: int(item[0])):
            value = _top_ngram_fraction(hashes, lengths, int(n), total)
            yield f"top_{n}gram", value, value > limit
        value = 1.0
        for n, limit in sorted(o.dup_ngram_max.items(), key=lambda item: int(item[0])):  # "10" after "5"
            # a repeated (n+1)-gram holds a repeated n-gram: after a zero, every longer one is zero too
            value = _dup_ngram_fraction(hashes, lengths, int(n), total) if value > 0 else 0.0
            yield f"dup_{n}gram", value, value > limit

    def reject_reason(self, doc: Document) -> str | None:
        return self.first_failure(doc)


@dataclass(frozen=True)
class C4Options:
    min_words_per_line: int = 3
    min_sentences: int = 3
    drop_curly_braces: bool = True
    boilerplate: tuple[str, ...] | list[str] = BOILERPLATE


class C4Quality(LanguageRule, Step):
    """C4's rules: removes lines without terminal punctuation, with too few words, or of boilerplate
    (cookie/privacy notices, "javascript"), then removes documents with "lorem ipsum", curly braces
    (optional: they mark code) or too few sentences left."""

    name = "c4_quality"
    OPTIONS = C4Options

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.init_options(options, languages)

    def keep_line(self, line: str, language: str | None, o: C4Options) -> bool:
        stripped = line.strip()
        lower = stripped.lower()
        return (stripped.endswith(TERMINAL_PUNCT) and len(segment(stripped, language)) >= o.min_words_per_line
                and not any(phrase in lower for phrase in o.boilerplate))

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        return self._checks(text, language, [])

    def _checks(self, text: str, language: str | None, kept: list[str]) -> Iterator[Check]:
        """The checks; fills `kept` with the lines that pass the line rules."""
        o = self.options(language)
        lower = text.lower()
        yield "lorem_ipsum", "lorem ipsum" in lower, "lorem ipsum" in lower
        yield "curly_braces", "{" in text, o.drop_curly_braces and "{" in text
        doc_lines = lines(text)
        kept.extend(line for line in doc_lines if self.keep_line(line, language, o))
        self.count("lines_removed", len(doc_lines) - len(kept))
        sentences = sum(line.count(p) for line in kept for p in SENTENCE_ENDS)
        yield "too_few_sentences", sentences, sentences < o.min_sentences

    def process(self, doc: Document) -> Document | None:
        kept: list[str] = []
        if reason := next((r for r, _, failed in self._checks(doc.text, language_of(doc), kept) if failed), None):
            return self.drop(doc, reason)
        doc.text = "\n".join(kept)
        return doc


@dataclass(frozen=True)
class FineWebOptions:
    min_line_punct_ratio: float = 0.12
    short_line_chars: int = 30
    max_short_line_ratio: float = 0.67
    max_dup_line_char_ratio: float = 0.01
    max_newline_word_ratio: float = 0.3


class FineWebQuality(LanguageRule, Filter):
    """FineWeb's rules: share of lines ending in punctuation, share of short lines, characters in
    duplicated lines, and newlines per word (list-like pages)."""

    name = "fineweb_quality"
    OPTIONS = FineWebOptions
    BUILTIN = {code: {"short_line_chars": 7, "max_dup_line_char_ratio": 0.15} for code in ("zh", "ja")}

    def __init__(self, *, languages: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__()
        self.init_options(options, languages)

    def checks(self, text: str, language: str | None) -> Iterator[Check]:
        o = self.options(language)
        doc_lines = [line.strip() for line in lines(text)]
        yield "empty", not doc_lines, not doc_lines
        if not doc_lines:
            return
        punct = sum(line.endswith(TERMINAL_PUNCT) for line in doc_lines) / len(doc_lines)
        yield "line_punct_ratio", punct, punct < o.min_line_punct_ratio
        short = sum(len(line) <= o.short_line_chars for line in doc_lines) / len(doc_lines)
        yield "short_line_ratio", short, short > o.max_short_line_ratio
        dup = _duplicate_fraction(doc_lines)[1]
        yield "dup_line_chars", dup, dup > o.max_dup_line_char_ratio
        newlines = text.count("\n") / max(len(segment(text, language)), 1)
        yield "newline_word_ratio", newlines, newlines > o.max_newline_word_ratio

    def reject_reason(self, doc: Document) -> str | None:
        return self.first_failure(doc)
