"""Language identification with py3langid's bundled model (naive Bayes over byte n-grams; ships inside
the package, nothing is downloaded). The language and its probability go into the document's metadata,
where the language-aware rules read them."""

from __future__ import annotations

from typing import Any

from tnlm.data.document import Document
from tnlm.data.language import LANGUAGE_KEY, SCORE_KEY, check_language
from tnlm.data.step import Step
from tnlm.errors import DataError


def load_identifier(languages: list[str] | None) -> Any:
    """py3langid's identifier with normalised probabilities, restricted to `languages` if given."""
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as err:
        raise DataError("language_id needs py3langid: pip install 'tnlm[data]'") from err
    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    if languages:
        identifier.set_languages(languages)
    return identifier


class LanguageID(Step):
    """Tags each document with `metadata.language` (ISO 639-1) and `metadata.language_score` (the
    model's probability, 0-1), counts documents per language, and removes those not in `keep` or
    scored below `min_score` (a number, or one per language: `{zh: 0.8, en: 0.6}`).

    `languages` restricts the model to the languages the corpus can hold: faster, and no confusion
    with unrelated ones (classical Chinese scores 0.6-0.9 as "zh" among all languages, 1.0 among a
    few). Only the first `max_chars` characters are classified."""

    name = "language_id"

    def __init__(self, *, languages: list[str] | None = None, keep: list[str] | None = None,
                 min_score: float | dict[str, float] = 0.0, max_chars: int = 2000) -> None:
        super().__init__()
        self.languages = [check_language(c, where="language_id: languages") for c in languages or []] or None
        self.keep = {check_language(c, where="language_id: keep") for c in keep} if keep is not None else None
        if self.keep is not None and self.languages and self.keep - set(self.languages):
            raise DataError(f"language_id: keep lists {sorted(self.keep - set(self.languages))}, which are not "
                            "in languages: the model would never answer them")
        self.min_score = self._scores(min_score)
        if max_chars < 1:
            raise DataError("language_id: max_chars must be at least 1")
        self.max_chars = max_chars
        self.identifier = load_identifier(self.languages)

    @staticmethod
    def _scores(min_score: float | dict[str, float]) -> dict[str | None, float]:
        if isinstance(min_score, (int, float)):
            return {None: float(min_score)}
        if not isinstance(min_score, dict):
            raise DataError("language_id: min_score is a number or a mapping {language: number}")
        return {check_language(c, where="language_id: min_score"): float(v) for c, v in min_score.items()}

    def process(self, doc: Document) -> Document | None:
        code, score = self.identifier.classify(doc.text[: self.max_chars])
        doc.metadata[LANGUAGE_KEY], doc.metadata[SCORE_KEY] = code, round(float(score), 4)
        self.count(code)
        if self.keep is not None and code not in self.keep:
            self.drop(doc, "unwanted_language")
            return None
        if score < self.min_score.get(code, self.min_score.get(None, 0.0)):
            self.drop(doc, "low_language_score")
            return None
        return doc

    def __getstate__(self) -> dict[str, Any]:  # the model (tens of MB) is rebuilt, not pickled
        return {k: v for k, v in self.__dict__.items() if k != "identifier"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.identifier = load_identifier(self.languages)
