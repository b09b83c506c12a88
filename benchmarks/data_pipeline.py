"""Throughput of the data pipeline on the built-in corpus (Python's help topics, the standard
library's docstrings and its source): each step alone (MB/s of input), the whole pipeline with 1 and
2 worker processes, tokenizer training, and packing (tokens/s).

    python benchmarks/data_pipeline.py [--max-files N]

Prints a table and writes benchmarks/results/data_pipeline.{json,png}."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
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


def step_entries() -> list[dict]:
    entries = [
        {"step": "normalize"}, {"step": "length", "min_chars": 200}, {"step": "gopher_quality"},
        {"step": "gopher_repetition"}, {"step": "c4_quality", "drop_curly_braces": False}, {"step": "fineweb_quality"},
        {"step": "bad_words", "words": ["darn", "heck"], "max_ratio": 0.01}, {"step": "pii"},
        {"step": "exact_dedup"}, {"step": "minhash_dedup"},
        {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "max_docs": 300},
         "drop_fraction": 0.1},
    ]
    if SHARED.is_dir():
        entries.insert(8, {"step": "decontaminate", "eval_paths": [str(SHARED / d) for d in
                                                                    ("piqa", "winogrande", "arc", "boolq", "copa")]})
    return entries


def time_step(entry: dict, docs: list[Document]) -> dict:
    step = build_step(entry)  # building (e.g. the n-gram index, the scorer) is not timed
    copies = [Document(text=d.text, id=d.id) for d in docs]
    start = time.perf_counter()
    if isinstance(step, GlobalStep):
        step.fit((f"0:{i}", d) for i, d in enumerate(copies))
    kept = sum(1 for _ in step.run(copies, rank=0))
    seconds = time.perf_counter() - start
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    return {"name": entry["step"], "docs_in": len(docs), "docs_out": kept, "mb": mb, "seconds": seconds,
            "mb_per_s": mb / seconds}


def pipeline_config(output: Path, max_files: int | None, workers: int) -> dict:
    return {
        "source": {"type": "builtin", "kind": "all", "num_shards": 8, "max_files": max_files},
        "output": str(output), "workers": workers,
        "steps": [{"step": "normalize", "collapse_spaces": False}, {"step": "gopher_quality", "min_words": 30},
                  {"step": "gopher_repetition"}, {"step": "exact_dedup"}, {"step": "minhash_dedup"}, {"step": "pii"}],
    }


def time_pipeline(tmp: Path, max_files: int | None, workers: int) -> dict:
    out = tmp / f"pipeline-{workers}"
    start = time.perf_counter()
    report = run_pipeline(pipeline_config(out, max_files, workers), progress=False)
    seconds = time.perf_counter() - start
    mb = report.steps[0].bytes_out / 1e6
    return {"name": f"whole pipeline, {workers} worker(s)", "docs_in": report.steps[0].docs_out,
            "docs_out": report.docs_out, "mb": mb, "seconds": seconds, "mb_per_s": mb / seconds}


def chinese_docs() -> list[Document]:
    """Chinese prose and poetry from ../shared/data, when present, so the tokenizer sees CJK text."""
    from tnlm.data.sources import FileSource

    if not (SHARED / "chinese").is_dir():
        return []
    source = FileSource(paths=[str(SHARED / "chinese" / "*.json")], text_key="paragraphs")
    return list(source.documents())


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
    mb = sum(len(t.encode()) for t in texts) / 1e6
    rows = [
        {"name": f"tokenizer train (vocab {vocab_size})", "docs_in": len(train), "docs_out": len(train),
         "mb": mb * 0.95, "seconds": train_s, "mb_per_s": mb * 0.95 / train_s},
        {"name": "pack (tokenize + write shards)", "docs_in": len(docs), "docs_out": len(docs), "mb": mb,
         "seconds": pack_s, "mb_per_s": mb / pack_s, "tokens": tokens, "tokens_per_s": tokens / pack_s},
    ]
    en, zh = split_by_language(held)
    return rows, {"chars_per_token_en": chars_per_token(tok, en) if en else None,
                  "chars_per_token_zh": chars_per_token(tok, zh) if zh else None, "held_out_docs": len(held)}


def print_table(rows: list[dict]) -> None:
    print(f"{'step':38s} {'docs in':>8s} {'docs out':>8s} {'MB':>7s} {'s':>7s} {'MB/s':>7s} {'tokens/s':>10s}")
    for r in rows:
        tps = f"{r['tokens_per_s']:,.0f}" if "tokens_per_s" in r else ""
        print(f"{r['name']:38s} {r['docs_in']:8d} {r['docs_out']:8d} {r['mb']:7.2f} {r['seconds']:7.2f} "
              f"{r['mb_per_s']:7.2f} {tps:>10s}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.5))
    names, rates = [r["name"] for r in rows][::-1], [r["mb_per_s"] for r in rows][::-1]
    ax.barh(names, rates, color="tab:blue")
    for y, rate in enumerate(rates):
        ax.text(rate * 1.05, y, f"{rate:.2f}", va="center", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(min(rates) / 2, max(rates) * 4)
    ax.set_xlabel("MB of input text per second, log scale (higher is better)")
    ax.set_title("tnlm data pipeline on the built-in corpus (2-core CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-files", type=int, default=None, help="limit the standard-library files read")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the saved JSON")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads((RESULTS / "data_pipeline.json").read_text())["rows"], RESULTS / "data_pipeline.png")
        return
    source = BuiltinSource(kind="all", num_shards=1, max_files=args.max_files)
    start = time.perf_counter()
    docs = list(source.documents())
    mb = sum(len(d.text.encode()) for d in docs) / 1e6
    read = {"name": "read built-in corpus (ast docstrings)", "docs_in": len(docs), "docs_out": len(docs), "mb": mb,
            "seconds": time.perf_counter() - start}
    read["mb_per_s"] = mb / read["seconds"]
    normalized = list(build_step({"step": "normalize", "collapse_spaces": False}).run(docs))
    rows = [read] + [time_step(entry, normalized) for entry in step_entries()]
    tmp = Path(tempfile.mkdtemp(prefix="tnlm-bench-"))
    try:
        rows += [time_pipeline(tmp, args.max_files, workers) for workers in (1, 2)]
        pack_rows, tokenizer_stats = time_tokenizer_and_pack(tmp, normalized, args.vocab_size)
        rows += pack_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows)
    serial, parallel = rows[-4]["seconds"], rows[-3]["seconds"]
    load = os.getloadavg()[0]
    print(f"2 workers vs 1: {serial / parallel:.2f}x (1-minute load average {load:.1f} on {os.cpu_count()} cores); "
          f"characters per token on held-out text: English {tokenizer_stats['chars_per_token_en']:.2f}, "
          f"Chinese {tokenizer_stats['chars_per_token_zh'] or float('nan'):.2f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {"corpus": "builtin kind=all", "max_files": args.max_files, "machine": platform.processor() or platform.machine(),
              "rows": rows, "speedup_2_workers": serial / parallel, "load_average_1min": load,
              "cpu_count": os.cpu_count(), **tokenizer_stats}
    (RESULTS / "data_pipeline.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(rows, RESULTS / "data_pipeline.png")


if __name__ == "__main__":
    main()
