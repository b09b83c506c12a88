import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.text import english_paragraph
from tnlm.data.files import DataError, read_documents
from tnlm.data.pipeline import Pipeline, PipelineConfig, run_pipeline
from tnlm.data.quality import GopherQuality


def make_corpus(folder: Path, english_docs: list[str], *, shards: int = 4) -> None:
    """English documents with planted exact and near duplicates, PII and junk, spread over shards."""
    docs = list(english_docs)
    docs += [english_docs[0], english_docs[1].replace("river", "stream", 1)]  # duplicates
    docs += ["too short", "Contact me at someone@example.com. " + english_paragraph(random.Random(99), 8)]
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        rows = [{"text": t, "id": f"doc{i}"} for i, t in enumerate(docs) if i % shards == s]
        lines = [json.dumps(r) for r in rows] + (["{broken json"] if s == 0 else [])
        (folder / f"part{s}.jsonl").write_text("\n".join(lines) + "\n")


def config(input_dir: Path, output: Path, **extra) -> dict:
    return {
        "source": {"type": "files", "paths": [str(input_dir)], "id_key": "id"},
        "output": str(output),
        "steps": [
            {"step": "normalize"},
            {"step": "gopher_quality", "min_words": 20},
            {"step": "exact_dedup"},
            {"step": "minhash_dedup", "threshold": 0.7},
            {"step": "pii"},
        ],
        **extra,
    }


def output_docs(folder: Path) -> list[tuple[str, str]]:
    return [(d.id, d.text) for p in sorted(folder.glob("shard-*.jsonl")) for d in read_documents(p)]


def test_pipeline_runs_and_reports(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    report = run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)
    rows = {s.name: s for s in report.steps}
    assert rows["read"].docs_out == 44 and rows["read"].reasons["malformed_lines"] == 1
    assert rows["gopher_quality"].reasons["too_few_words"] == 1
    assert rows["exact_dedup"].removed == 1 and rows["minhash_dedup"].removed == 1
    assert rows["pii"].counters["EMAIL"] == 1
    docs = output_docs(tmp_path / "out")
    assert len(docs) == report.docs_out == 41
    assert len({i for i, _ in docs}) == 41 and not any("@example.com" in t for _, t in docs)
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["steps"][2]["examples"][0]["reason"] == "too_few_words"
    assert "gopher_quality" in str(report.table().columns[0]._cells)


def test_parallel_run_matches_serial_run(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    run_pipeline(config(tmp_path / "in", tmp_path / "serial"), progress=False)
    run_pipeline(config(tmp_path / "in", tmp_path / "parallel", workers=2), progress=False)
    assert output_docs(tmp_path / "serial") == output_docs(tmp_path / "parallel")


def test_parallel_run_of_uneven_shards_matches_serial_run(tmp_path, english_docs):
    """The pool takes the largest shard first (here the last file), yet the dedup decisions follow
    corpus order: the copy in the small first shard is kept, the one in the big last shard removed."""
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [2, 3, 4, 30]
    docs = iter(english_docs)
    for s, n in enumerate(sizes):
        rows = [{"text": next(docs), "id": f"p{s}-{i}"} for i in range(n - (s == 3))]
        if s == 3:
            rows.append({"text": english_docs[0], "id": "copy-of-first"})
        (folder / f"part{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline = Pipeline(PipelineConfig.from_dict(config(folder, tmp_path / "probe")))
    assert max(range(4), key=lambda i: pipeline.estimated_bytes(0, i)) == 3
    serial = run_pipeline(config(folder, tmp_path / "serial"), progress=False)
    parallel = run_pipeline(config(folder, tmp_path / "parallel", workers=3), progress=False)
    assert output_docs(tmp_path / "serial") == output_docs(tmp_path / "parallel")
    ids = [i for i, _ in output_docs(tmp_path / "parallel")]
    assert "p0-0" in ids and "copy-of-first" not in ids
    assert [s.to_json() | {"seconds": 0} for s in serial.steps] == [s.to_json() | {"seconds": 0} for s in parallel.steps]


def test_resume_after_a_crash_gives_the_same_output(tmp_path, english_docs, monkeypatch):
    make_corpus(tmp_path / "in", english_docs)
    run_pipeline(config(tmp_path / "in", tmp_path / "clean"), progress=False)

    original = GopherQuality.reject_reason
    calls = {"n": 0}

    def crash_on_third_shard(self, doc):
        calls["n"] += 1
        if calls["n"] > 25:
            raise KeyboardInterrupt("simulated kill")
        return original(self, doc)

    monkeypatch.setattr(GopherQuality, "reject_reason", crash_on_third_shard)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config(tmp_path / "in", tmp_path / "resumed"), progress=False)
    done = list((tmp_path / "resumed" / "_work" / "stage0" / "_stats").glob("*.json"))
    assert 0 < len(done) < 4  # some shards finished, some did not
    monkeypatch.setattr(GopherQuality, "reject_reason", original)
    report = run_pipeline(config(tmp_path / "in", tmp_path / "resumed"), progress=False)
    assert output_docs(tmp_path / "resumed") == output_docs(tmp_path / "clean")
    assert report.steps[0].docs_out == 44  # every shard counted once


def step_counts(report) -> list[dict]:
    """Each step's report without its timing, which differs from run to run."""
    return [{k: v for k, v in step.items() if k != "seconds"} for step in report.to_json()["steps"]]


@pytest.mark.slow  # ~15 s, mostly the child's `import tnlm`; test_resume_after_a_crash covers the same code in-process
def test_killed_process_resumes_without_losing_or_duplicating(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs * 30, shards=24)
    cfg = config(tmp_path / "in", tmp_path / "out")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    script = "import sys; from tnlm.data.pipeline import run_pipeline; run_pipeline(sys.argv[1], progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cfg.yaml")], start_new_session=True)
    stats = tmp_path / "out" / "_work" / "stage0" / "_stats"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(stats.glob("*.json"))) < 3:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(stats.glob("*.json")))
    assert 3 <= finished < 24, "the run must be killed part-way through stage 0"
    assert not (tmp_path / "out" / "report.json").exists()
    report = run_pipeline(tmp_path / "cfg.yaml", progress=False)
    cfg["output"] = str(tmp_path / "uninterrupted")
    reference = run_pipeline(cfg, progress=False)
    assert output_docs(tmp_path / "out") == output_docs(tmp_path / "uninterrupted")
    assert step_counts(report) == step_counts(reference)
    assert not list((tmp_path / "out").rglob(".*.tmp*"))


def test_bad_configs_are_clear_errors(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    base = config(tmp_path / "in", tmp_path / "out")
    with pytest.raises(DataError, match="unknown step 'dedupe'.*minhash_dedup"):
        run_pipeline({**base, "steps": [{"step": "dedupe"}]}, progress=False)
    with pytest.raises(DataError, match="bad options for step 'gopher_quality'"):
        run_pipeline({**base, "steps": [{"step": "gopher_quality", "min_wrds": 3}]}, progress=False)
    with pytest.raises(DataError, match="lacks output"):
        PipelineConfig.from_dict({"source": {}, "steps": []})
    (tmp_path / "bad.yaml").write_text("steps: [unclosed")
    with pytest.raises(DataError, match="not valid YAML"):
        PipelineConfig.from_yaml(tmp_path / "bad.yaml")


def test_empty_result_and_changed_config(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    strict = {**config(tmp_path / "in", tmp_path / "out"), "steps": [{"step": "gopher_quality", "min_words": 10_000}]}
    with pytest.raises(DataError, match="kept no documents"):
        run_pipeline(strict, progress=False)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["docs_out"] == 0
    with pytest.raises(DataError, match="different pipeline config"):
        run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)


def test_stages_split_at_global_steps(tmp_path, english_docs):
    """Exact then MinHash dedup share a stage (one pass); a model-scored step, whose features are not
    cheap, starts its own; the datatrove engine's plan keeps one global step per stage."""
    make_corpus(tmp_path / "in", english_docs)
    cfg = PipelineConfig.from_dict(config(tmp_path / "in", tmp_path / "out"))
    pipeline = Pipeline(cfg)
    assert [s.step_indices for s in pipeline.stages] == [[0, 1], [2, 3, 4]]
    assert [s.heads for s in pipeline.stages] == [[], [2, 3]]
    assert pipeline.stages[-1].folder == tmp_path / "out"
    assert [s.step_indices for s in Pipeline(cfg, chain_global_steps=False).stages] == [[0, 1], [2], [3, 4]]
    tail = {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "max_docs": 20}}
    scored = PipelineConfig.from_dict({**config(tmp_path / "in", tmp_path / "out"),
                                       "steps": [{"step": "exact_dedup"}, tail, {"step": "minhash_dedup"}, {"step": "pii"}]})
    assert [s.heads for s in Pipeline(scored).stages] == [[0], [1, 2]]


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_compressed_outputs(tmp_path, english_docs, compression):
    make_corpus(tmp_path / "in", english_docs)
    report = run_pipeline(config(tmp_path / "in", tmp_path / "out", compression=compression), progress=False)
    suffix = {"gzip": ".jsonl.gz", "zstd": ".jsonl.zst"}[compression]
    files = sorted((tmp_path / "out").glob(f"shard-*{suffix}"))
    assert len(files) == 4
    assert sum(1 for p in files for _ in read_documents(p)) == report.docs_out == 41


def test_a_global_step_first_and_no_steps_at_all(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    first = {**config(tmp_path / "in", tmp_path / "a"), "steps": [{"step": "exact_dedup"}, {"step": "length"}]}
    report = run_pipeline(first, progress=False)
    assert [s.name for s in report.steps] == ["read", "exact_dedup", "length"] and report.steps[1].removed == 1
    copy = run_pipeline({**config(tmp_path / "in", tmp_path / "b"), "steps": []}, progress=False)
    assert copy.docs_out == 44 and len(output_docs(tmp_path / "b")) == 44


def test_intermediate_documents_are_removed_and_reruns_are_free(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    first = run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)
    assert not list((tmp_path / "out" / "_work").rglob("shard-*.jsonl"))
    assert list((tmp_path / "out" / "_work").rglob("_stats/shard-*.json"))
    again = run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)  # nothing left to do
    assert again.to_json() == first.to_json()
    run_pipeline(config(tmp_path / "in", tmp_path / "kept", keep_work=True), progress=False)
    assert len(list((tmp_path / "kept" / "_work").rglob("shard-*.jsonl"))) == 4  # 1 intermediate stage x 4 shards
    assert len(list((tmp_path / "kept" / "_work" / "features").rglob("shard-*.pkl"))) == 8  # 2 dedup steps x 4
    assert not (tmp_path / "out" / "_work" / "features").exists()


def test_refuses_to_write_into_a_folder_with_other_files(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_a_run_killed_while_writing_its_marker_is_not_mistaken_for_other_files(tmp_path, english_docs):
    """Seen in CI: a datatrove run stopped by Ctrl-C (its child process gets SIGTERM, so no cleanup runs)
    right as it wrote the run's marker left `_work/.config.json.*.tmp`; the rerun then refused the
    folder as "not empty" instead of resuming."""
    make_corpus(tmp_path / "in", english_docs)
    run_pipeline(config(tmp_path / "in", tmp_path / "clean"), progress=False)
    (tmp_path / "out" / "_work").mkdir(parents=True)
    (tmp_path / "out" / ".lock").write_text("12345\n")  # the killed run's lock, stale
    (tmp_path / "out" / "_work" / ".config.json.k1ll3d.tmp").write_text('{"source": ')  # cut short
    run_pipeline(config(tmp_path / "in", tmp_path / "out"), progress=False)
    assert output_docs(tmp_path / "out") == output_docs(tmp_path / "clean")
    assert not list((tmp_path / "out").rglob(".*.tmp*"))
    (tmp_path / "other" / "_work").mkdir(parents=True)  # a _work folder with anything else still is not ours
    (tmp_path / "other" / "_work" / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        run_pipeline(config(tmp_path / "in", tmp_path / "other"), progress=False)
    assert (tmp_path / "other" / "_work" / "notes.txt").read_text() == "keep me"


def test_refuses_an_output_folder_its_inputs_reach(tmp_path, english_docs):
    """Issue 19.2: an output folder inside the input folder doubled the data on a rerun."""
    make_corpus(tmp_path / "in", english_docs)
    make_corpus(tmp_path / "nested" / "sub", english_docs)
    inside = [([tmp_path / "in"], tmp_path / "in" / "out"), ([tmp_path / "in" / "**" / "*.jsonl"], tmp_path / "in" / "a"),
              ([tmp_path / "nested" / "*" / "*.jsonl"], tmp_path / "nested" / "b"), ([tmp_path / "in" / "part0.jsonl"], tmp_path / "in")]
    for paths, output in inside:
        cfg = config(tmp_path / "in", output)
        cfg["source"]["paths"] = [str(p) for p in paths]
        with pytest.raises(DataError, match="overlap"):
            run_pipeline(cfg, progress=False)
        assert not output.exists() or output == tmp_path / "in"
    # a pattern that cannot match the output's files is fine, and a later run over the whole input
    # folder does not read that output back in
    cfg = config(tmp_path / "in", tmp_path / "in" / "clean")
    cfg["source"]["paths"] = [str(tmp_path / "in" / "*.jsonl")]
    assert run_pipeline(cfg, progress=False).docs_out == 41
    again = run_pipeline(config(tmp_path / "in", tmp_path / "elsewhere"), progress=False)
    assert again.steps[0].docs_out == 44 and again.docs_out == 41


HOLD_LOCK = """
import sys
from tnlm.data.lock import folder_lock
with folder_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_one_run_per_output_folder_and_a_killed_runs_lock_is_taken_over(tmp_path, english_docs, caplog):
    """Issue 19.7: two runs on one output folder deleted each other's temporary files."""
    make_corpus(tmp_path / "in", english_docs)
    cfg = config(tmp_path / "in", tmp_path / "out")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / "out")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")})
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(DataError, match=f"in use by another tnlm run \\(process {holder.pid}\\)") as err:
            run_pipeline(cfg, progress=False)
        assert "\n" not in str(err.value)
        assert [p.name for p in (tmp_path / "out").iterdir()] == [".lock"]  # nothing touched
    finally:
        holder.kill()  # SIGKILL: the holder cannot release or clean up
        holder.wait()
    assert (tmp_path / "out" / ".lock").read_text().strip() == str(holder.pid)  # a stale lock stays behind
    with caplog.at_level("WARNING", logger="tnlm.data.lock"):
        assert run_pipeline(cfg, progress=False).docs_out == 41
    assert f"from process {holder.pid}" in caplog.text
    assert (tmp_path / "out" / ".lock").read_text() == ""  # released in order


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[2] / "configs" / "data").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_configs_name_real_steps_and_options(path):
    """Every step and option of a shipped config exists (per-language options too), and no config reads
    from ../shared: shipped configs run on a user's machine."""
    import dataclasses
    import inspect

    from tnlm.data.registry import STEPS
    from tnlm.data.sources import SOURCES
    from tnlm.data.toxicity import BadWordsOptions

    assert "../shared" not in path.read_text()
    cfg = PipelineConfig.from_yaml(path)
    source = dict(cfg.source)
    inspect.signature(SOURCES[source.pop("type")]).bind(**source)
    for entry in cfg.steps:
        options = {k: v for k, v in entry.items() if k != "step"}
        cls = STEPS[entry["step"]]
        fields = getattr(cls, "OPTIONS", BadWordsOptions if entry["step"] == "bad_words" else None)
        if fields is None:
            inspect.signature(cls).bind(**options)  # raises TypeError on a misspelt option
            continue
        names = {f.name for f in dataclasses.fields(fields)}
        assert set(options) - {"languages"} <= names, entry
        assert all(set(values) <= names for values in (options.get("languages") or {}).values()), entry
