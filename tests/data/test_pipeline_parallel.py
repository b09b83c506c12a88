"""The in-process engine run by one worker and by several, and with its global steps chained (exact and
MinHash dedup in one stage, their features written by the pass before) or one per stage: the same
documents and the same report, on a test-made corpus with planted duplicates across shards."""

import json
import shutil
from pathlib import Path

import pytest

from tests.data.planted import planted_corpus
from tnlm.data.files import DataError, read_documents
from tnlm.data.pipeline import Pipeline, PipelineConfig, run_pipeline

STEPS = [
    {"step": "exact_dedup"},  # first: its features need a pass over the source
    {"step": "normalize"},
    {"step": "length", "min_chars": 50},
    {"step": "exact_dedup"},
    {"step": "minhash_dedup"},
    {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "max_docs": 30},
     "drop_fraction": 0.05},
    {"step": "pii"},
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Planted near and exact copies in later shards (the first exact_dedup removes the exact ones),
    and more in the last shard: a verbatim copy, and copies hidden by zero-width spaces, which only
    normalize makes exact, so the second exact_dedup removes them; one is a copy of a near copy, so
    MinHash, chained after it, numbers the documents without them: the near copy after them must be
    the one it removes. And a short one the length rule drops."""
    folder = tmp_path / "in"
    planted = planted_corpus(folder, shards=5, unique=30, clusters=6, exact=3)
    first = {r["id"]: r for s in range(5) for r in map(json.loads, (folder / f"part{s}.jsonl").read_text().splitlines())}
    hidden = {"hidden-near": first[planted.near[0][1]]["text"], "hidden": first["u1"]["text"]}
    with (folder / "part4.jsonl").open("a") as f:
        for row in ({"id": "verbatim", "text": first["u0"]["text"]}, {"id": "short", "text": "too short"},
                    *({"id": key, "text": text.replace("a", "a\u200b")} for key, text in hidden.items()),
                    {"id": "late-near", "text": first["u2"]["text"].replace(" ", " and ", 1)}):
            f.write(json.dumps(row) + "\n")
    return folder


def config(corpus: Path, output: Path, **extra) -> dict:
    return {"source": {"type": "files", "paths": [str(corpus)]}, "output": str(output), "steps": STEPS, **extra}


def documents(folder: Path) -> list[tuple[str, str]]:
    return [(d.id, d.text) for p in sorted(folder.glob("shard-*.jsonl")) for d in read_documents(p)]


def counts(folder: Path) -> list[dict]:
    """The saved report without timings."""
    return [{k: v for k, v in row.items() if k != "seconds"}
            for row in json.loads((folder / "report.json").read_text())["steps"]]


def test_one_and_two_workers_keep_the_same_documents_and_count_the_same(corpus, tmp_path):
    one = run_pipeline(config(corpus, tmp_path / "one"), progress=False)
    run_pipeline(config(corpus, tmp_path / "two", workers=2), progress=False)
    run_pipeline(config(corpus, tmp_path / "three", workers=3), progress=False)
    assert documents(tmp_path / "one") == documents(tmp_path / "two") == documents(tmp_path / "three")
    assert counts(tmp_path / "one") == counts(tmp_path / "two") == counts(tmp_path / "three")
    removed = {s.name + str(i): s.removed for i, s in enumerate(one.steps)}
    assert removed["exact_dedup1"] == 4  # the three planted exact copies and "verbatim"
    assert removed["length3"] == 1  # "short"
    assert removed["exact_dedup4"] == 2  # the hidden copies
    kept = {i for i, _ in documents(tmp_path / "one")}
    assert not kept & {"verbatim", "short", "hidden", "hidden-near", "late-near", "e0-1", "e1-1", "e2-1"}
    assert removed["minhash_dedup5"] >= 6  # at least one near copy per cluster


def test_chained_global_steps_match_one_stage_per_global_step(corpus, tmp_path):
    """The fast plan (exact and MinHash dedup fitted from features the stage-0 pass wrote, then applied
    in one pass) against the plain one (a stage, a feature pass and a fit per global step)."""
    chained = run_pipeline(config(corpus, tmp_path / "chained", workers=2), progress=False)
    plain = Pipeline(PipelineConfig.from_dict(config(corpus, tmp_path / "plain", workers=2)), chain_global_steps=False)
    assert len(plain.stages) == len(Pipeline(PipelineConfig.from_dict(config(corpus, tmp_path / "x"))).stages) + 1
    reference = plain.run(progress=False)
    assert documents(tmp_path / "chained") == documents(tmp_path / "plain")
    assert [s.to_json() | {"seconds": 0} for s in chained.steps] == [s.to_json() | {"seconds": 0} for s in reference.steps]


def test_a_run_stopped_between_two_chained_fits_resumes_to_the_same_result(corpus, tmp_path):
    reference = run_pipeline(config(corpus, tmp_path / "reference"), progress=False)
    out = tmp_path / "out"
    run_pipeline(config(corpus, out, keep_work=True), progress=False)
    minhash_fit = next((out / "_work").glob("fit-04-minhash_dedup.json"))

    def forget_the_tail() -> None:  # as if killed after the exact dedup's fit, before MinHash's
        minhash_fit.unlink()
        for path in [*out.glob("shard-*"), *(out / "_stats").glob("*"), *(out / "_work").glob("fit-05-*"), out / "report.json"]:
            path.unlink()
        shutil.rmtree(out / "_work" / "stage1")  # the dedup stage: its documents, statistics ...
        shutil.rmtree(out / "_work" / "features" / "05-perplexity_tail", ignore_errors=True)  # ... and what its pass wrote

    forget_the_tail()
    assert (out / "_work" / "fit-03-exact_dedup.json").exists()
    again = run_pipeline(config(corpus, out, keep_work=True, workers=2), progress=False)
    assert documents(out) == documents(tmp_path / "reference") and counts(out) == counts(tmp_path / "reference")
    assert again.docs_out == reference.docs_out
    forget_the_tail()
    shutil.rmtree(out / "_work" / "features")  # the features too: recomputed from the kept documents
    run_pipeline(config(corpus, out, keep_work=True, workers=2), progress=False)
    assert documents(out) == documents(tmp_path / "reference") and counts(out) == counts(tmp_path / "reference")


def test_a_folder_from_another_work_layout_is_refused(corpus, tmp_path):
    out = tmp_path / "out"
    run_pipeline(config(corpus, out), progress=False)
    (out / "_work" / "engine.json").write_text(json.dumps({"engine": "tnlm"}))  # written by an older version
    with pytest.raises(DataError, match="another tnlm version"):
        run_pipeline(config(corpus, out), progress=False)
