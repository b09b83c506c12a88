import pytest

from tnlm.data.files import DataError, read_documents
from tnlm.data.pipeline import PipelineConfig, run_pipeline

from .test_pipeline import make_corpus

pytest.importorskip("datatrove")


def steps():
    return [{"step": "normalize"}, {"step": "gopher_quality", "min_words": 20}, {"step": "pii"}]


def test_datatrove_local_executor_with_two_workers_matches_tnlm(tmp_path, english_docs):
    from tnlm.data.datatrove_adapter import datatrove_executor

    make_corpus(tmp_path / "in", english_docs)
    source = {"type": "files", "paths": [str(tmp_path / "in")]}
    cfg = PipelineConfig.from_dict({"source": source, "output": str(tmp_path / "dt"), "steps": steps()})
    executor = datatrove_executor(cfg, workers=2)
    assert executor.tasks == 4 and executor.workers == 2
    executor.run()
    ours = run_pipeline({**cfg.__dict__, "output": str(tmp_path / "tnlm")}, progress=False)
    theirs = sorted((d.id, d.text) for p in (tmp_path / "dt").glob("*.jsonl") for d in read_documents(p))
    mine = sorted((d.id, d.text) for p in (tmp_path / "tnlm").glob("shard-*.jsonl") for d in read_documents(p))
    assert theirs == mine and len(mine) == ours.docs_out
    # datatrove marks finished tasks, so a rerun skips them
    assert len(list((tmp_path / "dt" / "_datatrove_logs" / "completions").iterdir())) == 4


def test_global_steps_are_refused_with_advice(tmp_path, english_docs):
    from tnlm.data.datatrove_adapter import datatrove_executor

    make_corpus(tmp_path / "in", english_docs)
    cfg = PipelineConfig.from_dict({"source": {"type": "files", "paths": [str(tmp_path / "in")]},
                                    "output": str(tmp_path / "dt"), "steps": [{"step": "minhash_dedup"}]})
    with pytest.raises(DataError, match="global step"):
        datatrove_executor(cfg)
