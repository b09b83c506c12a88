"""Languages: ISO 639-1 codes, words per language, a script-based guess, and per-language thresholds.

Words are what the quality rules count, so each language gets its own segmentation: Chinese through a
dictionary segmenter (rjieba), Japanese character by character (katakana runs and Latin runs stay
whole), everything else at whitespace. A rule reads a document's language from `metadata["language"]`
(set by the `language_id` step, or by the source) and otherwise guesses it from the script: mostly Han
characters is Chinese, Han with kana is Japanese, anything else gets the step's own thresholds."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Generic, TypeVar

from tnlm.data.document import Document
from tnlm.data.text import CJK_RANGES, HAS_WORD_CHAR_RE, words
from tnlm.errors import DataError

LANGUAGE_KEY, SCORE_KEY = "language", "language_score"

# the codes of py3langid's bundled model (tests check the list against the model)
LANGUAGES = frozenset(
    "ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu ext fa fi fo fr "
    "fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig is it ja jv ka kab kik kk km kn "
    "ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my ne nl nn no nso oc om or pa pcm pl ps pt qu "
    "ro ru rw sa sdh se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa wuu "
    "xh yo yue zh zu zxx".split())
CHINESE = frozenset({"zh", "wuu", "yue"})

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HAN_RE, KANA_RE = re.compile(f"[{HAN}]"), re.compile(f"[{KANA}]")
LETTER_RE = re.compile(r"[^\W\d_]")
# katakana runs (loanwords) | one hiragana or Han character | a run of anything else but spaces, CJK
# characters and CJK punctuation
JA_WORD_RE = re.compile(rf"[\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]+|[\u3040-\u309f{HAN}]|[^\s\u3000-\u303f{CJK_RANGES}]+")
GUESS_CHARS = 2000


def check_language(code: Any, *, where: str) -> str:
    """`code` if it is a language code the bundled model knows, else a DataError naming `where`."""
    if not isinstance(code, str) or code not in LANGUAGES:
        raise DataError(f"{where}: unknown language code {code!r}; use ISO 639-1 codes such as en, zh, ja, de "
                        f"(known: {' '.join(sorted(LANGUAGES))})")
    return code


def guess_language(text: str) -> str | None:
    """"zh" or "ja" when the start of `text` is mostly Han characters (with kana: "ja"), else None."""
    head = text[:GUESS_CHARS]
    if head.isascii():
        return None
    han, kana = len(HAN_RE.findall(head)), len(KANA_RE.findall(head))
    if not han + kana or han + kana < 0.3 * len(LETTER_RE.findall(head)):
        return None
    return "ja" if kana >= 0.1 * (han + kana) else "zh"


def language_of(doc: Document) -> str | None:
    """The document's language: its metadata's code when the model knows it, else the script's guess."""
    code = doc.metadata.get(LANGUAGE_KEY)
    return code if code in LANGUAGES else guess_language(doc.text)


def _jieba_words(text: str) -> list[str]:
    try:
        import rjieba
    except ImportError as err:
        raise DataError("Chinese word segmentation needs rjieba: pip install 'tnlm[data]'") from err
    return [w for w in rjieba.cut(text) if HAS_WORD_CHAR_RE.search(w)]


def _japanese_words(text: str) -> list[str]:
    return [w for w in JA_WORD_RE.findall(text) if HAS_WORD_CHAR_RE.search(w)]


def segmenter(language: str | None) -> Callable[[str], list[str]]:
    """How `language` splits into words: rjieba for Chinese, characters for Japanese, else whitespace
    (where a stray CJK character still counts as one word)."""
    if language in CHINESE:
        return _jieba_words
    return _japanese_words if language == "ja" else words


@lru_cache(maxsize=16)
def segment(text: str, language: str | None) -> list[str]:
    """The words of `text` in `language` (cached: consecutive rules look at the same text; do not
    modify the list)."""
    return segmenter(language)(text)


T = TypeVar("T")


class PerLanguage(Generic[T]):
    """A rule's thresholds for each language. The step's options apply to every language; built-in
    values for some languages (measured, see the data README) replace the defaults of the options the
    step does not set; the config's `languages: {code: {option: value}}` has the last word."""

    def __init__(self, options_class: Callable[..., T], options: dict[str, Any], *,
                 builtin: dict[str, dict[str, Any]], configured: dict[str, Any] | None, step: str) -> None:
        if configured is not None and not isinstance(configured, dict):
            raise DataError(f"{step}: languages must map language codes to options, e.g. {{zh: {{min_words: 30}}}}")
        self.base: T = options_class(**options)
        self.by_language: dict[str, T] = {}
        configured = configured or {}
        for code in sorted(set(builtin) | set(configured)):
            check_language(code, where=f"{step}: languages")
            overrides = configured.get(code) or {}
            if not isinstance(overrides, dict):
                raise DataError(f"{step}: languages.{code} must be a mapping of options")
            defaults = {k: v for k, v in builtin.get(code, {}).items() if k not in options}
            self.by_language[code] = self._replace({**defaults, **overrides}, step=f"{step}: languages.{code}")

    def _replace(self, overrides: dict[str, Any], *, step: str) -> T:
        names = {f.name for f in dataclasses.fields(self.base)}
        unknown = set(overrides) - names
        if unknown:
            raise DataError(f"{step}: unknown options {sorted(unknown)}; options: {', '.join(sorted(names))}")
        return dataclasses.replace(self.base, **overrides)

    def __call__(self, language: str | None) -> T:
        if not language:
            return self.base
        if language not in self.by_language and language in CHINESE:  # Wu, Cantonese: Chinese's values
            language = "zh"
        return self.by_language.get(language, self.base)
