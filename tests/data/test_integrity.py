"""Nothing vanishes without a count (issue 19): on random corpora with bad bytes, malformed lines and
repeated ids, every valid input line reaches the output or is counted as removed with a reason, and
every record that is not a valid line is counted by the read step with its reason."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from tnlm.data.files import read_documents
from tnlm.data.pipeline import run_pipeline

STEPS = [
    {"step": "normalize"},
    {"step": "length", "min_chars": 40},
    {"step": "gopher_quality", "min_words": 20},
    {"step": "exact_dedup"},
    {"step": "minhash_dedup", "threshold": 0.7},
    {"step": "pii"},
]


def random_corpus(folder: Path, texts: list[str], rng: random.Random, *, repair: bool) -> tuple[set[int], Counter]:
    """Files of JSON Lines mixing documents (tagged with a unique `line` number, ids drawn from a small
    pool so they repeat, some texts repeated) with bad records. Returns the line numbers that are valid
    documents and the count of bad records by the reason the reader should give."""
    folder.mkdir(parents=True)
    valid, bad, line = set(), Counter(), 0
    for f in range(rng.randint(1, 4)):
        rows: list[bytes] = []
        for _ in range(rng.randint(5, 40)):
            line += 1
            text = rng.choice(texts) if rng.random() < 0.8 else rng.choice(["short", "a b c", texts[0] + " " + texts[1]])
            row = json.dumps({"text": text, "id": f"id{rng.randrange(6)}", "line": line}).encode()
            kind = rng.choices(["ok", "bad_byte", "malformed", "not_object", "no_text", "blank"], [12, 2, 1, 1, 1, 1])[0]
            if kind == "bad_byte":
                cut = row.index(b'"text": "') + 9 + rng.randrange(3)
                row = row[:cut] + bytes([rng.choice([0xFF, 0xC3, 0x80, 0xED])]) + row[cut:]
                (valid.add(line) if repair else bad.update(["invalid_utf8"]))
            elif kind == "malformed":
                row, _ = row[: rng.randrange(1, len(row) - 1)], bad.update(["malformed_lines"])
            elif kind == "not_object":
                row, _ = b"[1, 2, 3]", bad.update(["malformed_lines"])
            elif kind == "no_text":
                row, _ = json.dumps({"body": text, "line": line}).encode(), bad.update(["missing_text"])
            elif kind == "blank":
                row = b"   "  # not a record at all
            else:
                valid.add(line)
            rows.append(row)
        data = b"\n".join(rows) + b"\n"
        if f % 2:
            (folder / f"part{f}.jsonl.gz").write_bytes(gzip.compress(data))
        else:
            (folder / f"part{f}.jsonl").write_bytes(data)
    return valid, bad


@pytest.mark.parametrize("seed", range(6))
def test_every_valid_line_is_in_the_output_or_counted_with_a_reason(tmp_path, english_docs, seed):
    rng = random.Random(seed)
    repair = seed % 3 == 2
    valid, bad = random_corpus(tmp_path / "in", english_docs[:12], rng, repair=repair)
    source = {"type": "files", "paths": [str(tmp_path / "in")], **({"encoding_errors": "replace"} if repair else {})}
    config = {"source": source, "output": str(tmp_path / "out"), "steps": STEPS, "workers": 2 if seed == 0 else 1}
    try:
        report = run_pipeline(config, progress=False)
    except Exception as err:  # every document removed is a legitimate outcome, with the report written
        assert "kept no documents" in str(err)
        report = None
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    steps = saved["steps"]

    read = steps[0]
    assert read["name"] == "read" and read["docs_out"] == len(valid)
    assert Counter(read["reasons"]) == bad  # every bad record, by its reason
    for before, step in zip(steps, steps[1:]):
        assert step["docs_in"] == before["docs_out"], step["name"]
    for step in steps:
        assert step["docs_in"] - step["docs_out"] == sum(step["reasons"].values()), step["name"]

    out_lines = [d.metadata["line"] for p in sorted((tmp_path / "out").glob("shard-*.jsonl")) for d in read_documents(p)]
    assert len(out_lines) == len(set(out_lines)) == saved["docs_out"]  # nothing doubled
    assert set(out_lines) <= valid  # nothing invented
    removed = sum(sum(step["reasons"].values()) for step in steps[1:])
    assert len(valid) == len(out_lines) + removed  # the rest is accounted for, with reasons
    assert report is None or report.docs_out == len(out_lines)
