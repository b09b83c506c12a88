"""Throughput of the data pipeline, side by side with datatrove, on the built-in corpus (Python's help
topics, the standard library's docstrings and its source):

  1. each tnlm step alone, and its datatrove counterpart on the same documents (Gopher quality and
     repetition, C4, FineWeb, exact and MinHash dedup: MB of input per second);
  2. the same rule pipeline (Gopher quality and repetition, C4, FineWeb, MinHash dedup) from JSON Lines
     to JSON Lines, by tnlm's engine, by datatrove's own blocks under its local executor, and by tnlm's
     steps under datatrove (`--engine datatrove`), with 1 and 2 workers;
  3. the pipeline recorded before (normalize, Gopher quality and repetition, exact and MinHash dedup,
     PII; 0.76 MB/s on one worker) with 1 and 2 workers, and optionally an older checkout's run of it
     in the same process tree (`--baseline-src OLD/src`), for a ratio measured under the same load;
  4. how the two MinHash implementations agree on planted near duplicates of decreasing similarity;
  5. tokenizer training and packing.

    python benchmarks/data_pipeline.py [--max-files N] [--baseline-src PATH] [--repeats 3] [--recorded-only]

The recorded pipeline runs `--repeats` interleaved rounds (1 and 2 workers, this tree and the baseline)
and keeps each one's fastest run; `--recorded-only` runs just those (data_pipeline.recorded.{json,png}).

datatrove's English rules split words with spaCy (pip install spacy; `tnlm[bench]`). Prints the tables
and writes benchmarks/results/data_pipeline.{json,png}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tnlm.data.document import Document
from tnlm.data.files import write_documents
from tnlm.data.pack import pack
from tnlm.data.pipeline import run_pipeline
from tnlm.data.registry import build_step
from tnlm.data.sources import BuiltinSource
from tnlm.data.step import GlobalStep
from tnlm.data.tokenizer import chars_per_token, save_tokenizer, split_by_language, train_tokenizer

RESULTS = Path(__file__).parent / "results"
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
RECORDED_MB_S = 0.76  # the recorded pipeline on one worker before this version (results/data_pipeline.json)
RULES = [{"step": "gopher_quality"}, {"step": "gopher_repetition"}, {"step": "c4_quality", "drop_curly_braces": False},
         {"step": "fineweb_quality"}, {"step": "minhash_dedup"}]


def row(name: str, docs_in: int, docs_out: int, mb: float, seconds: float, **extra) -> dict:
    return {"name": name, "docs_in": docs_in, "docs_out": docs_out, "mb": mb, "seconds": seconds,
            "mb_per_s": mb / seconds, **extra}


def megabytes(docs: list[Document]) -> float:
    return sum(len(d.text.encode()) for d in docs) / 1e6


# 1. steps ------------------------------------------------------------------------------------------

def step_entries() -> list[dict]:
    entries = [
        {"step": "normalize"}, {"step": "language_id", "languages": ["en", "zh", "ja", "fr", "de", "es"]},
        {"step": "length", "min_chars": 200}, *RULES[:4],
        {"step": "bad_words", "words": ["darn", "heck"], "max_ratio": 0.01}, {"step": "pii"},
        {"step": "exact_dedup"}, RULES[4],
        {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "max_docs": 300},
         "drop_fraction": 0.1},
    ]
    if SHARED.is_dir():
        entries.insert(9, {"step": "decontaminate", "eval_paths": [str(SHARED / d) for d in
                                                                    ("piqa", "winogrande", "arc", "boolq", "copa")]})
    return entries


def time_step(entry: dict, docs: list[Document]) -> dict:
    step = build_step(entry)  # building (the n-gram index, the scorer, the language model) is not timed
    copies = [Document(text=d.text, id=d.id) for d in docs]
    start = time.perf_counter()
    if isinstance(step, GlobalStep):
        step.fit((f"0:{i}", d) for i, d in enumerate(copies))
    kept = sum(1 for _ in step.run(copies, rank=0))
    return row(entry["step"], len(docs), kept, megabytes(docs), time.perf_counter() - start)


def datatrove_filters() -> dict:
    """tnlm step -> a factory of its datatrove counterpart with the same thresholds."""
    from datatrove.pipeline.filters import C4QualityFilter, FineWebQualityFilter, GopherQualityFilter
    from datatrove.pipeline.filters import GopherRepetitionFilter

    return {"gopher_quality": GopherQualityFilter, "gopher_repetition": GopherRepetitionFilter,
            "c4_quality": lambda: C4QualityFilter(filter_curly_bracket=False, min_num_sentences=3),
            "fineweb_quality": FineWebQualityFilter}


def datatrove_docs(docs: list[Document]) -> list:
    from datatrove.data import Document as DatatroveDocument

    return [DatatroveDocument(text=d.text, id=d.id) for d in docs]


def time_datatrove_filter(name: str, factory, docs: list[Document]) -> dict:
    block = factory()
    list(block.run(datatrove_docs(docs[:1])))  # load spaCy's tokenizer outside the timing
    copies = datatrove_docs(docs)
    start = time.perf_counter()
    kept = sum(1 for _ in block.run(copies))
    return row(f"datatrove {name}", len(docs), kept, megabytes(docs), time.perf_counter() - start)


def datatrove_dedup(kind: str, docs: list[Document], folder: Path) -> tuple[int, float]:
    """datatrove's exact or MinHash dedup blocks run one after the other in this process, on tnlm's words
    and settings (see tnlm.data.datatrove_engine): documents kept and seconds."""
    from datatrove.pipeline.dedup import (ExactDedupFilter, ExactDedupSignature, ExactFindDedups, MinhashDedupBuckets,
                                          MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)

    from tnlm.data.datatrove_adapter import SHARD_KEY, TnlmWords
    from tnlm.data.datatrove_engine import exact_config, minhash_config

    copies = [Document(text=d.text, id=d.id, metadata={SHARD_KEY: 0}) for d in docs]
    start = time.perf_counter()
    if kind == "exact":
        config = exact_config()
        deque_all(ExactDedupSignature(output_folder=str(folder / "sig"), config=config).run(copies))
        deque_all(ExactFindDedups(data_folder=str(folder / "sig"), output_folder=str(folder / "dup"), config=config).run())
        kept = sum(1 for _ in ExactDedupFilter(data_folder=str(folder / "dup"), config=config).run(copies))
    else:
        config = minhash_config(build_step({"step": "minhash_dedup"}))
        deque_all(MinhashDedupSignature(output_folder=str(folder / "sig"), config=config, language=TnlmWords()).run(copies))
        for bucket in range(config.num_buckets):
            deque_all(MinhashDedupBuckets(input_folder=str(folder / "sig"), output_folder=str(folder / "buckets"),
                                          config=config).run(None, bucket, config.num_buckets))
        deque_all(MinhashDedupCluster(input_folder=str(folder / "buckets"), output_folder=str(folder / "remove"),
                                      config=config).run())
        kept = sum(1 for _ in MinhashDedupFilter(input_folder=str(folder / "remove")).run(copies))
    return kept, time.perf_counter() - start


def deque_all(generator) -> None:
    for _ in generator or ():
        pass


def step_rows(docs: list[Document], tmp: Path, *, with_datatrove: bool) -> list[dict]:
    rows = []
    filters = datatrove_filters() if with_datatrove else {}
    for entry in step_entries():
        ours = time_step(entry, docs)
        rows.append(ours)
        name = entry["step"]
        if name in filters:
            rows.append(time_datatrove_filter(name, filters[name], docs))
        elif with_datatrove and name in ("exact_dedup", "minhash_dedup"):
            kept, seconds = datatrove_dedup(name.split("_")[0], docs, tmp / f"dt-{name}")
            rows.append(row(f"datatrove {name}", len(docs), kept, megabytes(docs), seconds))
        if rows[-1] is not ours:
            rows[-1]["vs_tnlm"] = ours["mb_per_s"] / rows[-1]["mb_per_s"]  # > 1: tnlm is faster
    return rows


# 2. the same rule pipeline, three ways ----------------------------------------------------------------

def time_rule_pipelines(corpus: Path, tmp: Path, workers: int, mb: float, *, with_datatrove: bool) -> list[dict]:
    source = {"type": "files", "paths": [str(corpus)]}
    config = {"source": source, "output": str(tmp / f"rules-tnlm-{workers}"), "workers": workers, "steps": RULES}
    start = time.perf_counter()
    report = run_pipeline(config, progress=False)
    rows = [row(f"rules, tnlm engine, {workers} worker(s)", report.steps[0].docs_out, report.docs_out, mb,
                time.perf_counter() - start)]
    if not with_datatrove:
        return rows
    from tnlm.data.datatrove_engine import run_datatrove

    start = time.perf_counter()
    report = run_datatrove({**config, "output": str(tmp / f"rules-tnlm-dt-{workers}")}, workers=workers)
    rows.append(row(f"rules, tnlm steps on datatrove, {workers} worker(s)", report.steps[0].docs_out, report.docs_out,
                    mb, time.perf_counter() - start))
    start = time.perf_counter()
    kept = run_datatrove_blocks(corpus, tmp / f"rules-dt-{workers}", workers)
    rows.append(row(f"rules, datatrove's blocks, {workers} worker(s)", rows[0]["docs_in"], kept, mb,
                    time.perf_counter() - start))
    rows[-1]["vs_tnlm"] = rows[0]["mb_per_s"] / rows[-1]["mb_per_s"]
    return rows


def run_datatrove_blocks(corpus: Path, out: Path, workers: int) -> int:
    """datatrove's recipe: read, four filters, write; MinHash signatures, buckets, clusters; filter, write."""
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup import MinhashDedupSignature
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from tnlm.data.datatrove_adapter import TnlmWords
    from tnlm.data.datatrove_engine import minhash_config

    tasks = len(list(corpus.glob("*.jsonl")))
    config = minhash_config(build_step({"step": "minhash_dedup"}))
    filters = [factory() for factory in datatrove_filters().values()]
    jobs = [([JsonlReader(str(corpus)), *filters, JsonlWriter(str(out / "filtered"), compression=None)], tasks),
            ([JsonlReader(str(out / "filtered")), MinhashDedupSignature(str(out / "sig"), config=config,
                                                                         language=TnlmWords())], tasks),
            ([MinhashDedupBuckets(str(out / "sig"), str(out / "buckets"), config=config)], config.num_buckets),
            ([MinhashDedupCluster(str(out / "buckets"), str(out / "remove"), config=config)], 1),
            ([JsonlReader(str(out / "filtered")), MinhashDedupFilter(str(out / "remove")),
              JsonlWriter(str(out / "final"), compression=None)], tasks)]
    for blocks, n in jobs:
        LocalPipelineExecutor(blocks, tasks=n, workers=min(workers, n), logging_dir=str(out / f"logs{len(blocks)}-{n}"),
                              start_method="fork").run()
    return sum(1 for p in (out / "final").glob("*.jsonl") for _ in p.open())


# 3. the recorded pipeline -------------------------------------------------------------------------------

RECORDED = """
import json, resource, sys, time
from tnlm.data.pipeline import run_pipeline
config = json.loads(sys.argv[1])
start, cpu = time.perf_counter(), time.process_time()
report = run_pipeline(config, progress=False)
children = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": time.perf_counter() - start, "mb": report.steps[0].bytes_out / 1e6,
                  "docs_in": report.steps[0].docs_out, "docs_out": report.docs_out,
                  "main_cpu_s": time.process_time() - cpu, "workers_cpu_s": children.ru_utime + children.ru_stime}))
"""


def recorded_config(output: Path, max_files: int | None, workers: int) -> dict:
    return {
        "source": {"type": "builtin", "kind": "all", "num_shards": 8, "max_files": max_files},
        "output": str(output), "workers": workers,
        "steps": [{"step": "normalize", "collapse_spaces": False}, {"step": "gopher_quality", "min_words": 30},
                  {"step": "gopher_repetition"}, {"step": "exact_dedup"}, {"step": "minhash_dedup"}, {"step": "pii"}],
    }


def time_recorded(tmp: Path, max_files: int | None, workers: int, src: str, label: str) -> dict:
    """The recorded pipeline in a fresh process importing tnlm from `src` (this tree or an older one)."""
    output = tmp / f"recorded-{label}-{workers}"
    shutil.rmtree(output, ignore_errors=True)
    config = recorded_config(output, max_files, workers)
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run([sys.executable, "-c", RECORDED, json.dumps(config)], env=env, capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return row(f"recorded pipeline ({label}), {workers} worker(s)", r["docs_in"], r["docs_out"], r["mb"], r["seconds"],
               main_cpu_s=r["main_cpu_s"], workers_cpu_s=r["workers_cpu_s"])


def recorded_rows(tmp: Path, max_files: int | None, trees: dict[str, str], repeats: int) -> list[dict]:
    """Each tree's recorded pipeline with 1 and 2 workers, `repeats` rounds interleaved (1 and 2 workers,
    this tree and the baseline, one after the other in each round), so that all see the same load; the
    fastest run of each is kept, with every run's seconds beside it, and the CPU seconds of the run's
    main process and of its workers (CPU time holds when other programs share the cores; wall time not)."""
    runs: dict[str, list[dict]] = {}
    for _ in range(repeats):
        for workers in (1, 2):
            for label, src in trees.items():
                r = time_recorded(tmp, max_files, workers, src, label)
                runs.setdefault(r["name"], []).append(r)
    return [min(rs, key=lambda r: r["seconds"]) | {"runs_s": [round(r["seconds"], 3) for r in rs],
                                                    "runs_cpu_s": [(round(r["main_cpu_s"], 2), round(r["workers_cpu_s"], 2)) for r in rs]}
            for rs in runs.values()]


# 4. agreement of the two MinHash implementations ----------------------------------------------------------

def minhash_agreement(tmp: Path, *, clusters: int = 60, words: int = 300) -> list[dict]:
    """Planted clusters (an original and two copies with k of `words` words changed) for several k:
    the share of copies each implementation removes, and of clusters where both keep the same member."""
    rng = random.Random(5)
    vocabulary = [f"w{i}" for i in range(5000)]
    out = []
    for changes in (1, 5, 10, 20, 30):
        docs, groups = [], []
        for c in range(clusters):
            original = [rng.choice(vocabulary) for _ in range(words)]
            ids = []
            for k in range(3):
                text = list(original)
                for i in rng.sample(range(words), changes if k else 0):
                    text[i] = rng.choice(vocabulary)
                ids.append(f"c{c}-{k}")
                docs.append(Document(text=" ".join(text), id=ids[-1]))
            groups.append(ids)
        order = rng.sample(range(len(docs)), len(docs))
        docs = [docs[i] for i in order]
        step = build_step({"step": "minhash_dedup"})
        step.fit((f"0:{i}", d) for i, d in enumerate(docs))
        ours = {d.id for d in step.run([Document(d.text, d.id) for d in docs])}
        theirs = {d.id for d in _datatrove_minhash_kept(docs, tmp / f"agree-{changes}")}
        copies = 2 * clusters
        out.append({"changed_words": changes, "jaccard_about": round((words - changes * 5) / (words + changes * 5), 2),
                    "tnlm_removed": (len(docs) - len(ours)) / copies, "datatrove_removed": (len(docs) - len(theirs)) / copies,
                    "same_decisions": sum(set(g) & ours == set(g) & theirs for g in groups) / clusters})
    return out


def _datatrove_minhash_kept(docs: list[Document], folder: Path) -> list:
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter
    from datatrove.pipeline.dedup import MinhashDedupSignature

    from tnlm.data.datatrove_adapter import TnlmWords
    from tnlm.data.datatrove_engine import minhash_config

    config = minhash_config(build_step({"step": "minhash_dedup"}))
    deque_all(MinhashDedupSignature(str(folder / "sig"), config=config, language=TnlmWords()).run(docs))
    for bucket in range(config.num_buckets):
        deque_all(MinhashDedupBuckets(str(folder / "sig"), str(folder / "b"), config=config).run(None, bucket,
                                                                                              config.num_buckets))
    deque_all(MinhashDedupCluster(str(folder / "b"), str(folder / "r"), config=config).run())
    return list(MinhashDedupFilter(str(folder / "r")).run([Document(d.text, d.id) for d in docs]))


# 5. tokenizer and packing ------------------------------------------------------------------------------

def chinese_docs() -> list[Document]:
    """Chinese prose and poetry from ../shared/data, when present, so the tokenizer sees CJK text."""
    from tnlm.data.sources import FileSource

    if not (SHARED / "chinese").is_dir():
        return []
    return list(FileSource(paths=[str(SHARED / "chinese" / "*.json")], text_key="paragraphs").documents())


def time_tokenizer_and_pack(tmp: Path, docs: list[Document], vocab_size: int) -> tuple[list[dict], dict]:
    docs = docs + chinese_docs()
    texts = [d.text for d in docs]
    held, train = texts[::20], [t for i, t in enumerate(texts) if i % 20]
    start = time.perf_counter()
    tok = train_tokenizer(train, vocab_size=vocab_size, show_progress=False)
    train_s = time.perf_counter() - start
    save_tokenizer(tok, tmp / "tok")
    write_documents(tmp / "docs" / "all.jsonl", docs)
    start = time.perf_counter()
    meta = pack([str(tmp / "docs")], tmp / "tok", tmp / "tokens", progress=False)
    pack_s = time.perf_counter() - start
    tokens = meta["splits"]["train"]["tokens"] + meta["splits"]["val"]["tokens"]
    mb = megabytes(docs)
    rows = [row(f"tokenizer train (vocab {vocab_size})", len(train), len(train), mb * 0.95, train_s),
            row("pack (tokenize + write shards)", len(docs), len(docs), mb, pack_s, tokens=tokens,
                tokens_per_s=tokens / pack_s)]
    en, zh = split_by_language(held)
    return rows, {"chars_per_token_en": chars_per_token(tok, en) if en else None,
                  "chars_per_token_zh": chars_per_token(tok, zh) if zh else None, "held_out_docs": len(held)}


# output -----------------------------------------------------------------------------------------------------

def print_table(rows: list[dict]) -> None:
    print(f"{'step':46s} {'docs in':>8s} {'docs out':>8s} {'MB':>7s} {'s':>7s} {'MB/s':>7s} {'tnlm x':>7s} {'tokens/s':>10s}")
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else ""
        ratio = f"{r['vs_tnlm']:.2f}" if "vs_tnlm" in r else ""
        print(f"{r['name']:46s} {r['docs_in']:8d} {r['docs_out']:8d} {r['mb']:7.2f} {r['seconds']:7.2f} "
              f"{r['mb_per_s']:7.2f} {ratio:>7s} {tps:>10s}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    names, rates = [r["name"] for r in rows][::-1], [r["mb_per_s"] for r in rows][::-1]
    colors = ["tab:orange" if "datatrove" in n else "tab:blue" for n in names]
    ax.barh(names, rates, color=colors)
    for y, rate in enumerate(rates):
        ax.text(rate * 1.05, y, f"{rate:.2f}", va="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_xlim(min(rates) / 2, max(rates) * 4)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_xlabel("MB of input text per second, log scale (higher is better); orange: datatrove")
    ax.set_title(f"tnlm data pipeline and datatrove on the built-in corpus ({os.cpu_count()}-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(rows: list[dict], agreement: list[dict]) -> dict:
    by = {r["name"]: r for r in rows}
    one, two = by["recorded pipeline (this tree), 1 worker(s)"], by["recorded pipeline (this tree), 2 worker(s)"]
    out = {"recorded_1_worker_vs_0.76": one["mb_per_s"] / RECORDED_MB_S,
           "recorded_2_vs_1_workers": two["mb_per_s"] / one["mb_per_s"]}
    if "recorded pipeline (baseline), 1 worker(s)" in by:
        base_one = by["recorded pipeline (baseline), 1 worker(s)"]
        out["recorded_1_worker_vs_baseline"] = one["mb_per_s"] / base_one["mb_per_s"]
        out["baseline_2_vs_1_workers"] = by["recorded pipeline (baseline), 2 worker(s)"]["mb_per_s"] / base_one["mb_per_s"]
    rules = [r for r in rows if r["name"].startswith("rules, tnlm engine")]
    if len(rules) == 2:
        out["rules_2_vs_1_workers"] = rules[1]["mb_per_s"] / rules[0]["mb_per_s"]
    out["slower_than_datatrove"] = [r["name"] for r in rows if r.get("vs_tnlm", 2) < 1]
    for key, value in out.items():
        print(f"{key}: {value if isinstance(value, list) else round(value, 2)}")
    for a in agreement:
        print(f"MinHash agreement, {a['changed_words']:2d} of 300 words changed (Jaccard ~{a['jaccard_about']}): "
              f"tnlm removes {a['tnlm_removed']:.0%}, datatrove {a['datatrove_removed']:.0%} of the copies; "
              f"same decisions in {a['same_decisions']:.0%} of clusters")
    return out


def recorded_only(args: argparse.Namespace, trees: dict[str, str]) -> None:
    """The recorded pipeline's rounds alone: data_pipeline.recorded.{json,png}."""
    tmp = Path(tempfile.mkdtemp(prefix="tnlm-bench-"))
    try:
        rows = recorded_rows(tmp, args.max_files, trees, args.repeats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    for r in rows:
        print(f"{r['name']}: runs {r['runs_s']} s; CPU s (main process, workers) {r['runs_cpu_s']}")
    load = os.getloadavg()[0]
    print(f"1-minute load average {load:.1f} on {os.cpu_count()} cores")
    ratios = summary(rows, [])
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"corpus": "builtin kind=all", "max_files": args.max_files, "repeats": args.repeats, "rows": rows,
              "summary": ratios, "load_average_1min": load, "cpu_count": os.cpu_count()}
    (args.out / "data_pipeline.recorded.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "data_pipeline.recorded.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-files", type=int, default=None, help="limit the standard-library files read")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--baseline-src", default=None, help="an older checkout's src/ to time the recorded pipeline with")
    parser.add_argument("--no-datatrove", action="store_true", help="tnlm only")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the recorded pipeline (the fastest counts)")
    parser.add_argument("--recorded-only", action="store_true",
                        help="only the recorded pipeline's rounds (the 1-worker and 2-worker ratios)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for data_pipeline.{json,png}")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the saved JSON")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((args.out / "data_pipeline.json").read_text())["rows"], args.out / "data_pipeline.png")
        return
    trees = {"this tree": str(Path(__file__).resolve().parents[1] / "src")}
    if args.baseline_src:
        trees["baseline"] = args.baseline_src
    if args.recorded_only:
        recorded_only(args, trees)
        return
    with_datatrove = not args.no_datatrove
    start = time.perf_counter()
    docs = list(BuiltinSource(kind="all", num_shards=1, max_files=args.max_files).documents())
    rows = [row("read built-in corpus (ast docstrings)", len(docs), len(docs), megabytes(docs), time.perf_counter() - start)]
    normalized = list(build_step({"step": "normalize", "collapse_spaces": False}).run(docs))
    tmp = Path(tempfile.mkdtemp(prefix="tnlm-bench-"))
    try:
        rows += step_rows(normalized, tmp, with_datatrove=with_datatrove)
        corpus = tmp / "corpus"
        for shard in range(8):
            write_documents(corpus / f"part{shard}.jsonl", normalized[shard::8])
        for workers in (1, 2):
            rows += time_rule_pipelines(corpus, tmp, workers, megabytes(normalized), with_datatrove=with_datatrove)
        rows += recorded_rows(tmp, args.max_files, trees, args.repeats)
        agreement = minhash_agreement(tmp) if with_datatrove else []
        pack_rows, tokenizer_stats = time_tokenizer_and_pack(tmp, normalized, args.vocab_size)
        rows += pack_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    load = os.getloadavg()[0]
    print(f"1-minute load average {load:.1f} on {os.cpu_count()} cores; characters per token on held-out text: "
          f"English {tokenizer_stats['chars_per_token_en']:.2f}, Chinese {tokenizer_stats['chars_per_token_zh'] or float('nan'):.2f}")
    ratios = summary(rows, agreement)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"corpus": "builtin kind=all", "max_files": args.max_files, "machine": platform.processor() or platform.machine(),
              "rows": rows, "summary": ratios, "minhash_agreement": agreement, "load_average_1min": load,
              "cpu_count": os.cpu_count(), **tokenizer_stats}
    (args.out / "data_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, args.out / "data_pipeline.png")


if __name__ == "__main__":
    main()
