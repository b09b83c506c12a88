"""How the quality rules' per-language thresholds were chosen: every value a rule compares with a
threshold, measured on clean text (Chinese prose and poetry, English stories, from ../shared/data) and on
junk made from it (repeated lines, symbol soup, keyword spam, menu lines), with each rule's English
(published) and Chinese (built-in) threshold beside it, then the share of each set the rules remove.

    python benchmarks/data_thresholds.py

Prints the tables and writes benchmarks/results/data_thresholds.{json,png}."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from tnlm.data.document import Document
from tnlm.data.normalize import Normalize
from tnlm.data.quality import C4Quality, FineWebQuality, GopherQuality, GopherRepetition

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
PAGE_CHARS = 400  # poems are grouped into pages of at least this many characters, as anthology pages are

# reason -> (option, "max": fails above / "min": fails below); a dict option holds one value per n
CHECKED = {
    "too_few_words": ("min_words", "min"), "mean_word_length": ("min_mean_word_length", "min"),
    "symbol_word_ratio": ("max_symbol_word_ratio", "max"), "non_alpha_words": ("min_alpha_words_ratio", "min"),
    "long_clauses": ("max_mean_clause_chars", "max"), "few_stop_words": ("min_stop_words", "min"),
    "dup_line_fraction": ("max_dup_line_fraction", "max"), "dup_para_fraction": ("max_dup_para_fraction", "max"),
    "dup_line_char_fraction": ("max_dup_line_char_fraction", "max"),
    "top_2gram": ("top_ngram_max", "max"), "top_3gram": ("top_ngram_max", "max"), "top_4gram": ("top_ngram_max", "max"),
    **{f"dup_{n}gram": ("dup_ngram_max", "max") for n in range(5, 11)},
    "too_few_sentences": ("min_sentences", "min"),
    "line_punct_ratio": ("min_line_punct_ratio", "min"), "short_line_ratio": ("max_short_line_ratio", "max"),
    "dup_line_chars": ("max_dup_line_char_ratio", "max"), "newline_word_ratio": ("max_newline_word_ratio", "max"),
    "keyword_list": ("max_keyword_list_ratio", "max"),
}
KEYWORDS_ZH = ["免费下载", "高清电影", "在线观看", "最新", "破解版", "手机版", "官方网站", "优惠", "代开发票", "彩票",
               "注册送", "百度云", "无删减", "全集", "热门", "排行榜"]
KEYWORDS_EN = ["cheap", "watches", "buy", "online", "best", "price", "free", "download", "movies", "hd", "casino",
               "bonus", "replica", "discount", "deal", "top"]
MENU_ZH = ["首页", "新闻", "体育", "娱乐", "财经", "科技", "汽车", "房产", "教育", "旅游", "登录", "注册", "联系我们"]
MENU_EN = ["Home", "News", "Sports", "Entertainment", "Business", "Tech", "Cars", "Login", "Register", "Contact us"]
SYMBOLS = list("★☆◆◇■□●○※→←↑↓#@&*%$§¶†‡~|/\\<>=+") + ["...", "…", "==", "##"]


def _json(name: str) -> list[dict]:
    return json.loads((SHARED / "chinese" / name).read_text(encoding="utf-8"))


def chinese_prose() -> list[str]:
    """The 34 chapters of the Analects and Mencius, one document each."""
    return [Normalize().transform("\n".join(c["paragraphs"])) for name in ("lunyu.json", "mengzi.json") for c in _json(name)]


def chinese_poetry_pages() -> list[str]:
    """Book of Songs, Tang 300 and Tang part 0: consecutive poems (title, author, lines) grouped into
    pages of at least PAGE_CHARS characters."""
    pages = []
    for name in ("shijing.json", "tangshi300.json", "poet.tang.0.json"):
        page: list[str] = []
        for poem in _json(name):
            head = f"《{poem['title']}》" + (f" {poem['author']}" if poem.get("author") else "")
            page.append(head + "\n" + "\n".join(poem.get("paragraphs") or poem.get("content")))
            if sum(map(len, page)) >= PAGE_CHARS:
                pages.append(Normalize().transform("\n\n".join(page)))
                page = []
    return pages


def english_stories() -> list[str]:
    text = (SHARED / "tinystories" / "tinystories_sample.complete.txt").read_text(encoding="utf-8")
    return [Normalize().transform(s) for s in text.split("<|endoftext|>") if s.strip()]


def junk(clean: list[str], *, keywords: list[str], menu: list[str], sep: str, rng: random.Random, n: int) -> dict[str, list[str]]:
    """Five kinds of junk, `n` of each: real lines with one repeated many times, symbols with a few
    keywords, keywords in random order run together (as `sep` joins words) or listed with commas,
    navigation menus."""
    def real_lines(k: int) -> list[str]:
        return [line for line in rng.choice(clean).split("\n") if line.strip()][:k]

    def soup() -> str:
        return "\n".join(sep.join(rng.choice(SYMBOLS + keywords[:3] + [str(rng.randint(0, 999))])
                                  for _ in range(rng.randint(8, 20))) for _ in range(rng.randint(8, 20)))

    def spam() -> str:
        return "\n".join(sep.join(rng.sample(keywords, rng.randint(6, 12))) + rng.choice(["", "!", "。" if sep == "" else "."])
                         for _ in range(rng.randint(10, 30)))

    def repeated() -> str:
        line = rng.choice([line for line in rng.choice(clean).split("\n") if line.strip()])
        return "\n".join(real_lines(3) + [line] * rng.randint(6, 15))

    def menus() -> str:
        return "\n".join([" | ".join(rng.sample(menu, 5)) for _ in range(rng.randint(3, 6))] + rng.sample(menu, len(menu)))

    def listed() -> str:
        return "\n".join(sep_list.join(rng.sample(keywords, rng.randint(6, 12))) + rng.choice(["", "!", end])
                         for _ in range(rng.randint(10, 30)))

    sep_list, end = ("，", "。") if sep == "" else (", ", ".")
    return {"repeated lines": [repeated() for _ in range(n)], "symbol soup": [soup() for _ in range(n)],
            "keyword spam": [spam() for _ in range(n)], "keyword list": [listed() for _ in range(n)],
            "menu lines": [menus() for _ in range(n)]}


def rules() -> list:
    return [C4Quality(), GopherQuality(), GopherRepetition(), FineWebQuality()]


def measure_all(sets: dict[str, tuple[list[str], str]]) -> dict[str, dict[str, list[float]]]:
    """set name -> reason -> the value of every document of the set."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, (texts, language) in sets.items():
        values: dict[str, list[float]] = {}
        for rule in rules():
            for text in texts:
                for reason, value in rule.measure(text, language).items():
                    if reason in CHECKED:
                        values.setdefault(reason, []).append(float(value))
        out[name] = values
    return out


def removed(texts: list[str], language: str) -> tuple[int, dict[str, int]]:
    """How many documents the chain c4 -> gopher_quality -> gopher_repetition -> fineweb removes, and why."""
    chain = rules()
    docs = [Document(text=t, id=str(i), metadata={"language": language}) for i, t in enumerate(texts)]
    for step in chain:
        docs = list(step.run(docs))
    reasons: dict[str, int] = {}
    for step in chain:
        for reason, count in step.stats.reasons.items():
            reasons[f"{step.name}:{reason}"] = reasons.get(f"{step.name}:{reason}", 0) + count
    return len(texts) - len(docs), reasons


def threshold(reason: str, language: str | None) -> str:
    option, _ = CHECKED[reason]
    for rule in rules():
        options = rule.options(language)
        if hasattr(options, option):
            value = getattr(options, option)
            if isinstance(value, dict):
                value = value.get(int(reason.split("_")[1].removesuffix("gram")))
            return "off" if value is None else f"{value:g}"
    return "-"


def worst(values: list[float], direction: str) -> float:
    return min(values) if direction == "min" else max(values)


def print_tables(measured: dict, counts: dict) -> list[dict]:
    rows = []
    print(f"{'value (rule option)':44s} {'en':>6s} {'en clean p1/p99':>16s} {'zh':>6s} {'zh prose':>9s} "
          f"{'zh poetry':>10s} {'zh junk p50':>11s}")
    for reason, (option, direction) in CHECKED.items():
        en, prose, poetry = (measured[k].get(reason, [0.0]) for k in ("en stories", "zh prose", "zh poetry pages"))
        zh_junk = [v for k, vals in measured.items() if k.startswith("zh junk") for v in vals.get(reason, [])]
        en_pct = np.percentile(en, 1 if direction == "min" else 99)
        row = {"reason": reason, "option": option, "direction": direction, "en": threshold(reason, None),
               "zh": threshold(reason, "zh"), "en_clean_percentile": float(en_pct),
               "zh_prose_worst": worst(prose, direction), "zh_poetry_worst": worst(poetry, direction),
               "zh_junk_median": float(np.median(zh_junk)) if zh_junk else None}
        rows.append(row)
        junk_text = f"{row['zh_junk_median']:11.3f}" if zh_junk else f"{'-':>11s}"
        print(f"{reason + ' (' + direction + ')':44s} {row['en']:>6s} {en_pct:16.3f} {row['zh']:>6s} "
              f"{row['zh_prose_worst']:9.3f} {row['zh_poetry_worst']:10.3f} {junk_text}")
    print(f"\n{'set':28s} {'docs':>6s} {'removed':>8s}  reasons")
    for name, (n, (k, reasons)) in counts.items():
        top = ", ".join(f"{r}={c}" for r, c in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
        print(f"{name:28s} {n:6d} {k:8d}  {top}")
    return rows


def plot(measured: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["dup_5gram", "top_4gram", "dup_line_chars", "short_line_ratio", "long_clauses", "few_stop_words"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, reason in zip(axes.flat, shown):
        names = [n for n in measured if measured[n].get(reason)]
        ax.boxplot([measured[n][reason] for n in names], orientation="horizontal", tick_labels=names, showfliers=True)
        for language, style in ((None, "--"), ("zh", "-")):
            value = threshold(reason, language)
            if value not in ("off", "-"):
                ax.axvline(float(value), color="tab:red", linestyle=style, label=f"{language or 'en'} {value}")
        ax.set_title(reason, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle("Rule values on clean and junk text; dashed: English threshold, solid: Chinese")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    rng = random.Random(0)
    prose, poetry, stories = chinese_prose(), chinese_poetry_pages(), english_stories()
    sets = {"zh prose": (prose, "zh"), "zh poetry pages": (poetry, "zh"), "en stories": (stories, "en")}
    for kind, texts in junk(prose + poetry, keywords=KEYWORDS_ZH, menu=MENU_ZH, sep="", rng=rng, n=50).items():
        sets[f"zh junk: {kind}"] = (texts, "zh")
    for kind, texts in junk(stories, keywords=KEYWORDS_EN, menu=MENU_EN, sep=" ", rng=rng, n=50).items():
        sets[f"en junk: {kind}"] = (texts, "en")
    measured = measure_all(sets)
    counts = {name: (len(texts), removed(texts, language)) for name, (texts, language) in sets.items()}
    rows = print_tables(measured, counts)
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"page_chars": PAGE_CHARS, "thresholds": rows,
              "removed": {name: {"docs": n, "removed": k, "reasons": reasons} for name, (n, (k, reasons)) in counts.items()}}
    (RESULTS / "data_thresholds.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    plot(measured, RESULTS / "data_thresholds.png")


if __name__ == "__main__":
    main()
