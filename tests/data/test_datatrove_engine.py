"""The datatrove engine: every step of a config, dedup and the perplexity tail included, under datatrove's
executors, with the same output folder and report as tnlm's engine; resuming; its bad inputs."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests.helpers.processes import marked_env, wait_gone, wait_until
from tnlm.data.files import read_documents
from tnlm.data.pipeline import run_pipeline
from tnlm.errors import DataError

from .planted import planted_corpus
from .test_pipeline import config, make_corpus, output_docs

pytest.importorskip("datatrove")

from tnlm.data.datatrove_engine import DatatroveRun, run_datatrove  # noqa: E402
from tnlm.data.pipeline import PipelineConfig  # noqa: E402

DEDUP = [{"step": "normalize"}, {"step": "exact_dedup"}, {"step": "minhash_dedup", "threshold": 0.8}, {"step": "pii"}]


def planted_config(tmp_path, output, steps=DEDUP):
    return {"source": {"type": "files", "paths": [str(tmp_path / "in")]}, "output": str(tmp_path / output),
            "steps": steps}


def kept_ids(folder) -> list[str]:
    return sorted(i for i, _ in output_docs(folder))


def report_rows(folder) -> list[dict]:
    """The saved report without timings, quoted examples (their order may differ between engines) and
    the dedup steps' own counters (LSH candidates for tnlm, duplicate pairs for datatrove)."""
    rows = json.loads((folder / "report.json").read_text())["steps"]
    return [{k: v for k, v in row.items() if k not in ("seconds", "examples")
             and not (k == "counters" and row["name"].endswith("dedup"))} for row in rows]


def test_both_engines_remove_the_same_planted_duplicates(tmp_path):
    planted = planted_corpus(tmp_path / "in")
    ours = run_pipeline(planted_config(tmp_path, "tnlm"), progress=False)
    theirs = run_datatrove(planted_config(tmp_path, "dt"), tasks=4, workers=2)
    for folder in ("tnlm", "dt"):
        kept = set(kept_ids(tmp_path / folder))
        assert set(planted.unique) <= kept, folder
        assert all(len(kept & set(cluster)) == 1 for cluster in planted.near), folder
        assert all(kept & set(group) == {group[0]} for group in planted.exact), folder  # the first copy stays
        assert len(kept) == len(planted.unique) + len(planted.near) + len(planted.exact)
    # tnlm keeps the first of each cluster; datatrove one member (see the data README on the difference)
    assert all(cluster[0] in kept_ids(tmp_path / "tnlm") for cluster in planted.near)
    assert [s.removed for s in ours.steps] == [s.removed for s in theirs.steps]
    assert [s.name for s in ours.steps] == [s.name for s in theirs.steps]
    # the same folder layout
    for name in ("report.json", "shard-00000.jsonl", "shard-00005.jsonl", "_work/config.json", "_stats"):
        assert (tmp_path / "dt" / name).exists() and (tmp_path / "tnlm" / name).exists()
    assert not list((tmp_path / "dt" / "_work").glob("stage*/shard-*"))  # intermediate documents are gone


def test_the_whole_pipeline_matches_tnlm_with_tasks_over_several_shards(tmp_path, english_docs):
    """Per-document steps, both dedups and the perplexity tail: same documents, same report."""
    make_corpus(tmp_path / "in", english_docs, shards=5)
    cfg = config(tmp_path / "in", tmp_path / "dt")
    cfg["steps"] += [{"step": "length", "min_chars": 10},
                     {"step": "perplexity_tail", "scorer": {"type": "ngram", "reference": "builtin", "max_docs": 40},
                      "drop_fraction": 0.1}]
    report = run_datatrove(cfg, tasks=2, workers=2)
    run_pipeline({**cfg, "output": str(tmp_path / "tnlm")}, progress=False)
    assert output_docs(tmp_path / "dt") == output_docs(tmp_path / "tnlm")
    assert report_rows(tmp_path / "dt") == report_rows(tmp_path / "tnlm")
    assert report.steps[-1].reasons["high_perplexity"] == 4
    assert json.loads((tmp_path / "dt" / "_work" / "engine.json").read_text()) == {"engine": "datatrove", "tasks": 2}


def test_a_global_step_first_and_gzip(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    cfg = {**config(tmp_path / "in", tmp_path / "dt"), "compression": "gzip",
           "steps": [{"step": "exact_dedup"}, {"step": "length", "min_chars": 10}]}
    report = run_datatrove(cfg, tasks=3)
    assert [s.name for s in report.steps] == ["read", "exact_dedup", "length"] and report.steps[1].removed == 1
    assert sum(1 for p in (tmp_path / "dt").glob("shard-*.jsonl.gz") for _ in read_documents(p)) == report.docs_out


def test_a_crashed_task_resumes_without_losing_or_duplicating(tmp_path, monkeypatch):
    """A task that dies part-way (here in-process; the slow test below kills a real process) leaves no
    partial shard; the rerun runs only the unfinished tasks."""
    from tnlm.data.normalize import Normalize

    planted_corpus(tmp_path / "in")
    run_datatrove(planted_config(tmp_path, "reference"), tasks=6, workers=1)
    original, calls = Normalize.transform, {"n": 0}

    def dies_in_the_third_task(self, text):
        calls["n"] += 1
        if calls["n"] > 32:
            raise KeyboardInterrupt("simulated kill")
        return original(self, text)

    monkeypatch.setattr(Normalize, "transform", dies_in_the_third_task)
    with pytest.raises(KeyboardInterrupt):
        run_datatrove(planted_config(tmp_path, "dt"), tasks=6, workers=1)
    completions = tmp_path / "dt" / "_work" / "datatrove" / "logs" / "stage0" / "completions"
    assert 0 < len(list(completions.iterdir())) < 6
    monkeypatch.setattr(Normalize, "transform", original)
    run_datatrove(planted_config(tmp_path, "dt"), tasks=6, workers=1)
    assert kept_ids(tmp_path / "dt") == kept_ids(tmp_path / "reference")
    assert len(output_docs(tmp_path / "dt")) == len(set(kept_ids(tmp_path / "dt")))
    assert report_rows(tmp_path / "dt")[0]["docs_out"] == report_rows(tmp_path / "reference")[0]["docs_out"]


def test_a_killed_datatrove_run_resumes_without_losing_or_duplicating(tmp_path):
    """SIGKILL to the whole process group part-way through a stage, then the same command again."""
    planted_corpus(tmp_path / "in", unique=200, shards=12)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(planted_config(tmp_path, "dt")))
    run_datatrove(planted_config(tmp_path, "reference"), tasks=12, workers=2)
    script = ("import sys; from tnlm.data.datatrove_engine import run_datatrove; "
              "run_datatrove(sys.argv[1], tasks=12, workers=1)")
    env, marker = marked_env()
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "cfg.yaml")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    completions = tmp_path / "dt" / "_work" / "datatrove" / "logs" / "stage1" / "completions"
    wait_until(lambda: len(list(completions.glob("*"))) >= 2, timeout=300, what="2 finished tasks of stage 1",
               alive=lambda: proc.poll() is None)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_gone(marker)  # its forked workers hold the folder's lock until they are gone too
    assert 2 <= len(list(completions.glob("*"))) < 12, "the run must be killed part-way through stage 1"
    assert not (tmp_path / "dt" / "report.json").exists()
    run_datatrove(tmp_path / "cfg.yaml", tasks=12, workers=1)
    assert kept_ids(tmp_path / "dt") == kept_ids(tmp_path / "reference")
    assert len(output_docs(tmp_path / "dt")) == len(set(kept_ids(tmp_path / "dt")))
    assert not list((tmp_path / "dt").rglob(".*.tmp*"))


def test_ray_executor_on_a_local_ray(tmp_path):
    ray = pytest.importorskip("ray", reason="the Ray executor's test needs Ray: pip install 'tnlm[ray]'")
    planted_corpus(tmp_path / "in", shards=4)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_datatrove(planted_config(tmp_path, "dt"), executor="ray", tasks=2, workers=2)
    finally:
        ray.shutdown()
    reference = run_pipeline(planted_config(tmp_path, "reference"), progress=False)
    assert [s.removed for s in report.steps] == [s.removed for s in reference.steps]
    assert len(kept_ids(tmp_path / "dt")) == len(kept_ids(tmp_path / "reference"))


FAKE_SBATCH = """#!/bin/sh
n=$(($(ls "$SBATCH_LOG" | wc -l) + 100))
cp "$(eval echo \\${$#})" "$SBATCH_LOG/$n.sh"
echo "$@" > "$SBATCH_LOG/$n.args"
echo "Submitted batch job $n"
"""


def test_slurm_submits_the_chain_and_its_jobs_run_the_pipeline(tmp_path, monkeypatch):
    """With a stand-in `sbatch`: every job is submitted after the one it depends on; then each array task
    is run as Slurm would (the pickled executor, SLURM_ARRAY_TASK_ID set), giving tnlm's output."""
    import dill

    planted_corpus(tmp_path / "in", shards=3)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text(FAKE_SBATCH)
    (tmp_path / "bin" / "scontrol").write_text('#!/bin/sh\necho "$3"\n')  # `scontrol show hostnames NODES`
    for tool in ("sbatch", "scontrol"):
        (tmp_path / "bin" / tool).chmod(0o755)
    (tmp_path / "sbatch").mkdir()
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("SBATCH_LOG", str(tmp_path / "sbatch"))
    cfg = {**planted_config(tmp_path, "dt"), "datatrove": {"slurm": {"partition": "cpu", "time": "1:00:00",
                                                                     "with_srun": False, "requeue_signals": None}}}
    assert run_datatrove(cfg, executor="slurm", tasks=3) is None
    plan = DatatroveRun(PipelineConfig.from_dict(cfg), executor="slurm", tasks=3)
    scripts = sorted((tmp_path / "sbatch").glob("*.sh"))
    jobs = [s for s in scripts if "launch_pickled_pipeline" in s.read_text()]
    assert len(jobs) == len(plan.jobs)  # (the others merge datatrove's own statistics)
    dependencies = [(tmp_path / "sbatch" / f"{s.stem}.args").read_text() for s in jobs[1:]]
    assert all("--dependency=afterok:" in d for d in dependencies)
    monkeypatch.setenv("SLURM_NODELIST", "localhost")
    for job in plan.jobs:
        with open(plan.log_dir(job.name) / "executor.pik", "rb") as f:
            executor = dill.load(f)
        for task in range(job.tasks):
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
            executor.run()
    reference = run_pipeline(planted_config(tmp_path, "reference"), progress=False)
    assert len(kept_ids(tmp_path / "dt")) == reference.docs_out
    assert report_rows(tmp_path / "dt")[:2] == report_rows(tmp_path / "reference")[:2]


@pytest.mark.parametrize(("executor", "module", "extra"), [("ray", "ray", "tnlm[ray]"), ("local", "datatrove", "tnlm[data]")])
def test_an_executor_whose_package_is_missing_names_the_extra(tmp_path, monkeypatch, executor, module, extra):
    planted_corpus(tmp_path / "in", shards=2)
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(DataError, match=rf"pip install '{extra.replace('[', '.').replace(']', '.')}'"):
        run_datatrove(planted_config(tmp_path, "dt"), executor=executor)
    assert not (tmp_path / "dt").exists()


def test_bad_inputs_are_clear_errors(tmp_path, monkeypatch):
    from tnlm.data import registry
    from tnlm.data.step import GlobalStep

    planted_corpus(tmp_path / "in", shards=2)
    with pytest.raises(DataError, match="unknown executor 'dask'"):
        run_datatrove(planted_config(tmp_path, "a"), executor="dask")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(DataError, match="sbatch"):
        run_datatrove(planted_config(tmp_path, "b"), executor="slurm")
    monkeypatch.undo()

    class Clustering(GlobalStep):
        name = "topic_clusters"

    monkeypatch.setitem(registry.STEPS, "topic_clusters", Clustering)
    with pytest.raises(DataError, match="'topic_clusters' has no datatrove mapping.*--engine tnlm"):
        run_datatrove(planted_config(tmp_path, "c", steps=[{"step": "topic_clusters"}]))
    with pytest.raises(DataError, match="unknown language code 'xx'"):
        run_datatrove(planted_config(tmp_path, "d", steps=[{"step": "gopher_quality", "languages": {"xx": {}}}]))
    with pytest.raises(DataError, match="--tasks must be at least 1"):
        run_datatrove(planted_config(tmp_path, "e"), tasks=-1)


def test_a_run_is_resumed_only_the_way_it_was_started(tmp_path):
    planted_corpus(tmp_path / "in", shards=4)
    run_datatrove(planted_config(tmp_path, "dt"), tasks=2)
    with pytest.raises(DataError, match="made with engine datatrove, tasks 2"):
        run_datatrove(planted_config(tmp_path, "dt"), tasks=4)
    with pytest.raises(DataError, match="made with engine datatrove"):
        run_pipeline(planted_config(tmp_path, "dt"), progress=False)
    again = run_datatrove(planted_config(tmp_path, "dt"), tasks=2)  # finished: nothing to do, same report
    assert again.docs_out == len(kept_ids(tmp_path / "dt"))
