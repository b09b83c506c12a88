"""Keep and remove, per language: clean Chinese, Japanese and English pass the web rules (C4, Gopher
quality and repetition, FineWeb); repeated lines, symbol soup and keyword spam in each are removed."""

import json

import pytest

from tnlm.data.document import Document
from tnlm.data.files import read_documents
from tnlm.data.registry import build_step
from tnlm.data.toxicity import BadWordsFilter

from .texts import EN_CLEAN, JA_CLEAN, JUNK, ZH_CLASSICAL, ZH_CLEAN, ZH_ENUMERATION, ZH_KEYWORD_LIST

WEB_RULES = [{"step": "c4_quality"}, {"step": "gopher_quality"}, {"step": "gopher_repetition"},
             {"step": "fineweb_quality"}]


def survivors(texts: list[str], *, language: str | None = None) -> tuple[list[str], dict[str, int]]:
    """The texts the web rules keep, and why the others went."""
    metadata = {"language": language} if language else {}
    docs = [Document(text=t, id=str(i), metadata=dict(metadata)) for i, t in enumerate(texts)]
    steps = [build_step(entry) for entry in WEB_RULES]
    for step in steps:
        docs = list(step.run(docs))
    reasons = {f"{s.name}:{r}": n for s in steps for r, n in s.stats.reasons.items()}
    return [d.id for d in docs], reasons


@pytest.mark.parametrize("tagged", [False, True], ids=["guessed", "tagged"])
@pytest.mark.parametrize(("language", "clean"), [("zh", [ZH_CLEAN, ZH_CLASSICAL]), ("ja", [JA_CLEAN]),
                                                 ("en", [EN_CLEAN])])
def test_clean_text_is_kept(language, clean, tagged):
    kept, reasons = survivors(clean, language=language if tagged else None)
    assert len(kept) == len(clean), reasons


@pytest.mark.parametrize("kind", ["repeated_lines", "symbol_soup", "keyword_spam"])
@pytest.mark.parametrize("language", ["zh", "ja", "en"])
def test_junk_is_removed(language, kind):
    kept, reasons = survivors([JUNK[language][kind]])
    assert kept == [], f"{language} {kind} survived"
    assert sum(reasons.values()) == 1


@pytest.mark.parametrize("tagged", [False, True], ids=["guessed", "tagged"])
def test_chinese_keyword_lists_are_removed_and_prose_with_a_list_is_kept(tagged):
    """Comma-separated keyword lists (SEO) survived every other Chinese rule; gopher_quality's
    keyword_list check removes them, not prose holding one enumeration or classical parallel clauses."""
    kept, reasons = survivors([ZH_KEYWORD_LIST, ZH_ENUMERATION, ZH_CLASSICAL, ZH_CLEAN], language="zh" if tagged else None)
    assert kept == ["1", "2", "3"], reasons
    assert reasons == {"gopher_quality:keyword_list": 1}
    without = build_step({"step": "gopher_quality", "languages": {"zh": {"max_keyword_list_ratio": None}}})
    assert without.reject_reason(Document(text=ZH_KEYWORD_LIST, id="k")) is None  # the one rule that catches it


def test_keyword_list_ratio_counts_list_sentences():
    from tnlm.data.quality import STOP_WORDS, keyword_list_ratio

    def ratio(text: str) -> float:
        return keyword_list_ratio(text, min_items=6, max_item_chars=8, stop_words=STOP_WORDS["zh"])

    items = "苹果，香蕉，橙子，葡萄，西瓜，草莓"
    assert ratio(items) == 1.0 and ratio(items + "。" + "我" * len(items)) == 0.5
    assert ratio("苹果，香蕉，橙子，葡萄，西瓜") == 0.0  # five items: not a list
    assert ratio("，".join(["红苹果大香蕉小橙子绿葡萄"] * 6)) == 0.0  # items of 12 characters
    assert ratio("口之于味也，目之于色也，耳之于声也，鼻之于臭也，四肢，安佚") == 0.0  # particles: prose
    assert ratio("") == 0.0


def test_keyword_list_rule_keeps_the_chinese_of_shared_data(shared_data):
    """No chapter of the Analects and Mencius and no poem of the Book of Songs and the Tang poems is a
    keyword list."""
    from tnlm.data.quality import GopherQuality

    rule = GopherQuality()
    texts = ["\n".join(c["paragraphs"]) for name in ("lunyu.json", "mengzi.json")
             for c in json.loads((shared_data / "chinese" / name).read_text())]
    texts += ["\n".join(p.get("paragraphs") or p.get("content")) for name in ("shijing.json", "tangshi300.json", "poet.tang.0.json")
              for p in json.loads((shared_data / "chinese" / name).read_text())]
    assert len(texts) == 34 + 305 + 366 + 1000
    flagged = [t for t in texts if rule.measure(t, "zh")["keyword_list"] > 0.5]
    assert flagged == []


def test_the_english_rules_alone_would_remove_the_classics(shared_data):
    """The case of issue 16: normalize, then the C4, Gopher quality and repetition and FineWeb rules
    over the 34 chapters of the Analects and Mencius remove none of them. With characters as words and
    English thresholds, repetition removed 9 (`dup_5gram`): the regression the Chinese segmentation and
    thresholds fix."""
    normalize = build_step({"step": "normalize"})
    chapters = [normalize.transform("\n".join(c["paragraphs"])) for name in ("lunyu.json", "mengzi.json")
                for c in json.loads((shared_data / "chinese" / name).read_text())]
    assert len(chapters) == 34
    english_only = build_step({"step": "gopher_repetition"})
    as_characters = [Document(text=" ".join(c), id=str(i), metadata={"language": "en"}) for i, c in enumerate(chapters)]
    assert len(list(english_only.run(as_characters))) < len(chapters)
    assert english_only.stats.reasons["dup_5gram"] > 0
    kept, reasons = survivors(chapters)
    assert len(kept) == len(chapters), reasons


def test_bad_words_per_language():
    step = BadWordsFilter(words=["fart"], max_hits=0, languages={"sv": {"words": ["skit"]}})
    swedish = Document(text="Tåget höll hög fart genom skogen.", id="sv", metadata={"language": "sv"})
    assert step.reject_reason(swedish) is None  # "fart" is speed in Swedish; its list is its own
    assert step.reject_reason(Document(text="What a skit, and a fart.", id="en")) == "bad_words_count"
    assert step.reject_reason(Document(text="Det var skit.", id="sv2", metadata={"language": "sv"})) == "bad_words_count"


def test_bad_words_ratio_counts_chinese_words():
    """The ratio's denominator is words in the language's segmentation, not characters."""
    text = "我们在北京学习中文，混蛋。"  # 6 words, 1 of them bad (1 in 6 > 0.1; 2 in 11 characters would be < 0.1)
    step = BadWordsFilter(words=["混蛋"], max_ratio=0.1)
    assert step.reject_reason(Document(text=text, id="z")) == "bad_words_ratio"
    assert BadWordsFilter(words=["混蛋"], max_ratio=0.2).reject_reason(Document(text=text, id="z")) is None


def test_the_mixed_web_config_keeps_clean_chinese_and_english_and_removes_junk(shared_data, tmp_path, monkeypatch):
    """configs/data/web_zh_en.yaml on the Analects and Mencius (34 chapters), the Book of Songs and Tang
    poems (grouped into pages), TinyStories, and junk in three languages."""
    import yaml

    from benchmarks.data_thresholds import chinese_poetry_pages, chinese_prose, english_stories
    from tests.helpers import REPO
    from tnlm.data.pipeline import run_pipeline

    sets = {"prose": chinese_prose(), "poetry": chinese_poetry_pages(), "story": english_stories()[:300],
            "junk": [text for kinds in JUNK.values() for text in kinds.values()]}
    rows = [{"id": f"{name}{i}", "text": text} for name, texts in sets.items() for i, text in enumerate(texts)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "web.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = yaml.safe_load((REPO / "configs" / "data" / "web_zh_en.yaml").read_text())
    cfg["source"]["paths"], cfg["output"] = [str(tmp_path / "in")], str(tmp_path / "out")
    monkeypatch.chdir(REPO)  # the config names its word lists relative to the repository
    report = run_pipeline(cfg, progress=False)
    kept = {doc.id for path in (tmp_path / "out").glob("shard-*") for doc in read_documents(path)}
    assert {f"prose{i}" for i in range(34)} <= kept
    assert {f"poetry{i}" for i in range(len(sets["poetry"]))} <= kept
    assert sum(1 for i in kept if i.startswith("story")) >= 0.97 * 300  # English defaults: ~2% of stories repeat
    assert not any(i.startswith("junk") for i in kept)
    language = next(s for s in report.steps if s.name == "language_id")
    assert language.counters["zh"] >= 34 + len(sets["poetry"]) and language.counters["en"] >= 300
    assert language.reasons["unwanted_language"] >= len(JUNK["ja"])  # Japanese is not kept by this config
