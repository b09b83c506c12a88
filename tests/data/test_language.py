"""Languages: codes, words per language, the script guess, per-language thresholds and the language-ID step."""

import pytest

from tnlm.data.document import Document
from tnlm.data.language import LANGUAGES, PerLanguage, check_language, guess_language, language_of, segment
from tnlm.data.quality import GopherQuality, GopherQualityOptions
from tnlm.data.registry import build_step
from tnlm.errors import DataError

from .texts import EN_CLEAN, JA_CLEAN, ZH_CLEAN


def test_language_codes_are_the_bundled_models():
    langid = pytest.importorskip("py3langid.langid")
    model = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE)
    assert LANGUAGES == set(model.nb_classes)


@pytest.mark.parametrize("code", ["xx", "english", "ZH", 7, None])
def test_unknown_language_codes_are_refused(code):
    with pytest.raises(DataError, match="unknown language code"):
        check_language(code, where="test")


def test_guess_from_the_script():
    assert guess_language(ZH_CLEAN) == "zh"
    assert guess_language(JA_CLEAN) == "ja"
    assert guess_language(EN_CLEAN) is None
    assert guess_language("An English page quoting 子曰 once, among many other words.") is None
    assert language_of(Document(text=ZH_CLEAN, id="a", metadata={"language": "en"})) == "en"  # tagged wins
    assert language_of(Document(text=ZH_CLEAN, id="a", metadata={"language": "Chinese"})) == "zh"  # not a code


def test_words_per_language():
    assert segment("我们在北京学习中文。", "zh") == ["我们", "在", "北京", "学习", "中文"]
    assert segment("コーヒーを飲む、Tokyo 2024年。", "ja") == ["コーヒー", "を", "飲", "む", "Tokyo", "2024", "年"]
    assert segment("Hello, world — 好", "de") == ["Hello,", "world", "好"]


def test_per_language_options_order():
    """The step's own options apply everywhere; built-in language values replace only the defaults the
    step does not set; `languages:` has the last word."""
    builtin = {"zh": {"min_words": 30, "min_stop_words": 0}}
    chosen = PerLanguage(GopherQualityOptions, {"min_words": 80}, builtin=builtin,
                         configured={"ja": {"min_stop_words": 5}}, step="gopher_quality")
    assert chosen("zh").min_words == 80 and chosen("zh").min_stop_words == 0
    assert chosen("ja").min_stop_words == 5 and chosen("ja").min_words == 80
    assert chosen("en") == chosen(None) == GopherQualityOptions(min_words=80)
    configured = PerLanguage(GopherQualityOptions, {}, builtin=builtin, configured={"zh": {"min_words": 10}}, step="g")
    assert configured("zh").min_words == 10 and configured("zh").min_stop_words == 0


@pytest.mark.parametrize(("languages", "message"), [
    ({"xx": {"min_words": 3}}, "unknown language code 'xx'"),
    ({"zh": {"min_wrds": 3}}, r"languages.zh: unknown options \['min_wrds'\]"),
    ({"zh": 3}, "must be a mapping"),
    (["zh"], "must map language codes"),
])
def test_bad_language_options(languages, message):
    with pytest.raises(DataError, match=message):
        build_step({"step": "gopher_quality", "languages": languages})


def test_configured_thresholds_apply_to_that_language_only():
    step = GopherQuality(languages={"zh": {"min_words": 10_000}})
    assert step.reject_reason(Document(text=ZH_CLEAN, id="z")) == "too_few_words"
    assert step.reject_reason(Document(text=EN_CLEAN, id="e")) is None


@pytest.fixture(scope="module")
def step_factory():
    pytest.importorskip("py3langid")
    return lambda **options: build_step({"step": "language_id", **options})


class TestLanguageID:
    def test_tags_counts_and_keeps(self, step_factory):
        step = step_factory(languages=["en", "zh", "ja", "fr"], keep=["en", "zh"])
        docs = [Document(text=t, id=str(i)) for i, t in enumerate([EN_CLEAN, ZH_CLEAN, JA_CLEAN, EN_CLEAN])]
        kept = list(step.run(docs))
        assert [d.metadata["language"] for d in kept] == ["en", "zh", "en"]
        assert all(0.5 < d.metadata["language_score"] <= 1 for d in kept)
        assert step.stats.counters == {"en": 2, "zh": 1, "ja": 1}
        assert dict(step.stats.reasons) == {"unwanted_language": 1}

    def test_min_score_per_language(self, step_factory):
        mixed = "Hello there, friend of mine. 你好，朋友。"
        scored = list(step_factory().run([Document(text=mixed, id="m")]))[0].metadata["language_score"]
        assert 0 < scored < 1
        strict = step_factory(languages=["en", "zh"], min_score={"en": 1.01, "zh": 1.01})
        assert list(strict.run([Document(text=mixed, id="m")])) == []
        assert dict(strict.stats.reasons) == {"low_language_score": 1}
        assert list(step_factory(min_score=scored - 0.01).run([Document(text=mixed, id="m")]))

    @pytest.mark.parametrize(("options", "message"), [
        ({"languages": ["en", "klingon"]}, "unknown language code 'klingon'"),
        ({"keep": ["xx"]}, "unknown language code 'xx'"),
        ({"languages": ["en"], "keep": ["zh"]}, "not in languages"),
        ({"min_score": "high"}, "min_score (is|must be) a number or a mapping"),
        ({"max_chars": 0}, "max_chars"),
    ])
    def test_bad_options(self, step_factory, options, message):
        with pytest.raises(DataError, match=message):
            step_factory(**options)

    def test_pickles_without_the_model(self, step_factory):
        import pickle

        step = step_factory(languages=["en", "zh"])
        assert len(pickle.dumps(step)) < 10_000
        clone = pickle.loads(pickle.dumps(step))
        assert clone.process(Document(text=ZH_CLEAN, id="z")).metadata["language"] == "zh"
