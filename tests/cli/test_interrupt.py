"""Ctrl-C on real `tnlm` processes: SIGINT to the whole process group, as a terminal sends it, at
several points of each long command, many times. Each interrupt must stop the command within a few
seconds, leave no process of its group behind, print one line that says how to resume (no
traceback) and exit 130; a rerun then finishes with exactly the output of an uninterrupted run."""

from __future__ import annotations

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

from tests.helpers.processes import STOP_LIMIT, marked_env, marked_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads process groups from /proc")

RESUME = "interrupted: rerun the same command to resume; finished shards are kept"
WORDS = ("the of and to in is was for on that with as it by at from this be are or an which one all "
         "river market garden teacher farmer sailor morning evening letter window bridge music "
         "quietly slowly happily walked painted wrote carried").split()  # fmt: skip


def corpus(folder: Path, *, files: int = 8, docs: int = 400, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(files):
        rows = []
        for i in range(docs):
            sentences = [" ".join(rng.choices(WORDS, k=14)).capitalize() + "." for _ in range(10)]
            rows.append(json.dumps({"id": f"{f}-{i}", "text": " ".join(sentences)}))
        (folder / f"part{f}.jsonl").write_text("\n".join(rows) + "\n")
    return folder


def pipeline_yaml(path: Path, inputs: Path, output: Path) -> Path:
    steps = [{"step": "normalize"}, {"step": "gopher_quality", "min_words": 20}, {"step": "exact_dedup"},
             {"step": "minhash_dedup", "threshold": 0.7}, {"step": "pii"}]
    path.write_text(yaml.safe_dump({"source": {"type": "files", "paths": [str(inputs)]}, "output": str(output),
                                    "workers": 2, "steps": steps}))
    return path


def tnlm(*args: str, cwd: Path) -> subprocess.Popen:
    env, marker = marked_env()
    proc = subprocess.Popen([sys.executable, "-m", "tnlm", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)  # pgid = pid
    proc.marker = marker
    return proc


def interrupt(proc: subprocess.Popen, *, after: float) -> tuple[int, str, float]:
    """SIGINT to the group `after` seconds in; returns (exit status, stderr, seconds to stop)."""
    time.sleep(after)
    sent = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass  # it finished first
    try:
        _, err = proc.communicate(timeout=STOP_LIMIT)
    except subprocess.TimeoutExpired:
        left = marked_processes(proc.marker)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"still running {STOP_LIMIT} s after Ctrl-C: {left}")
    stopped = time.monotonic() - sent
    deadline = time.monotonic() + 5
    while marked_processes(proc.marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not marked_processes(proc.marker), f"processes left behind: {marked_processes(proc.marker)}"
    return proc.returncode, err, stopped


def assert_interrupted(status: int, err: str, *, line: str) -> None:
    # 130; CPython itself exits by SIGINT (-2) when a Ctrl-C lands inside its exec() of generated code
    assert status in (130, -signal.SIGINT), (status, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    assert err.strip().splitlines()[-1] == line, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err[-2000:]


def shard_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.jsonl"))}


def run_to_end(*args: str, cwd: Path) -> str:
    proc = tnlm(*args, cwd=cwd)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return out


# when each Ctrl-C comes, as fractions of an uninterrupted run's wall time (start-up included), so that
# the same points of the work are hit on a fast machine and on a slow or busy one
FRACTIONS = [0.15, 0.25, 0.35, 0.45, 0.6, 0.8, 1.0, 1.2]


@pytest.mark.parametrize("fractions", [FRACTIONS], ids=["8-interrupts"])
def test_data_run_stops_cleanly_at_any_point_and_resumes(tmp_path: Path, fractions: list[float]) -> None:
    inputs = corpus(tmp_path / "in")
    reference = pipeline_yaml(tmp_path / "reference.yaml", inputs, tmp_path / "reference")
    start = time.monotonic()
    run_to_end("data", "run", str(reference), "--quiet", cwd=tmp_path)
    whole = time.monotonic() - start
    cfg = pipeline_yaml(tmp_path / "cfg.yaml", inputs, tmp_path / "out")
    outcomes = []
    for delay in (f * whole for f in fractions):  # the same output folder each time: Ctrl-C, rerun, Ctrl-C, ... as a user would
        status, err, stopped = interrupt(tnlm("data", "run", str(cfg), "--quiet", cwd=tmp_path), after=delay)
        if status == 0:
            break  # the resumed run finished before this interrupt
        outcomes.append((delay, round(stopped, 2)))
        line = err.strip().splitlines()[-1] if err.strip() else ""
        assert_interrupted(status, err, line=RESUME if line.startswith("interrupted:") else "interrupted")
    assert len(outcomes) >= 3, outcomes
    run_to_end("data", "run", str(cfg), "--quiet", cwd=tmp_path)
    assert shard_files(tmp_path / "out") == shard_files(tmp_path / "reference")


@pytest.mark.slow
def test_data_run_survives_many_interrupts(tmp_path: Path) -> None:
    """30 interrupts at random points of fresh runs (the report that found the hangs used 20)."""
    inputs = corpus(tmp_path / "in")
    rng = random.Random(1)
    interrupted = 0
    for i in range(30):
        cfg = pipeline_yaml(tmp_path / f"cfg{i}.yaml", inputs, tmp_path / f"out{i}")
        status, err, _ = interrupt(tnlm("data", "run", str(cfg), "--quiet", cwd=tmp_path), after=rng.uniform(0.2, 6.0))
        if status != 0:
            interrupted += 1
            line = err.strip().splitlines()[-1] if err.strip() else ""
            assert_interrupted(status, err, line=RESUME if line.startswith("interrupted:") else "interrupted")
    assert interrupted >= 25


def test_data_run_with_datatrove_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    """datatrove's executor runs its own pool: the command kills it as a group and leaves nothing."""
    inputs = corpus(tmp_path / "in", files=8, docs=800)
    cfg = pipeline_yaml(tmp_path / "cfg.yaml", inputs, tmp_path / "out")
    data = yaml.safe_load(cfg.read_text())
    data["steps"] = [{"step": "normalize"}, {"step": "gopher_quality", "min_words": 20}, {"step": "pii"}]
    cfg.write_text(yaml.safe_dump(data))
    args = ("data", "run", str(cfg), "--engine", "datatrove", "--workers", "2")
    stops = 0
    for delay in (1.5, 3.0):
        status, err, _ = interrupt(tnlm(*args, cwd=tmp_path), after=delay)
        if status == 0:
            break
        stops += 1
        line = err.strip().splitlines()[-1] if err.strip() else ""
        assert status in (130, -signal.SIGINT) and "Traceback" not in err, err[-2000:]
        assert line in (RESUME, "interrupted"), err[-2000:]
    assert stops >= 1, "the run finished before Ctrl-C; make the input bigger"
    run_to_end(*args, cwd=tmp_path)
    kept = sum(1 for p in (tmp_path / "out").glob("*.jsonl") for _ in p.open())
    assert kept == 8 * 800


def tokenizer_folder(tmp_path: Path) -> Path:
    from tnlm.data.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer([" ".join(WORDS)] * 20, vocab_size=400, show_progress=False)
    save_tokenizer(tok, tmp_path / "tok")
    return tmp_path / "tok"


def test_data_pack_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    inputs = corpus(tmp_path / "in", files=8, docs=600)
    tok = tokenizer_folder(tmp_path)
    run_to_end("data", "pack", str(inputs), "--tokenizer", str(tok), "--output", str(tmp_path / "reference"),
               cwd=tmp_path)
    args = ("data", "pack", str(inputs), "--tokenizer", str(tok), "--output", str(tmp_path / "out"), "--quiet")
    stops = 0
    for delay in (0.3, 1.2, 2.5):
        status, err, _ = interrupt(tnlm(*args, cwd=tmp_path), after=delay)
        if status == 0:
            break
        stops += 1
        line = err.strip().splitlines()[-1] if err.strip() else ""
        assert_interrupted(status, err, line=RESUME if line.startswith("interrupted:") else "interrupted")
    assert stops >= 1
    run_to_end(*args, cwd=tmp_path)
    for name in sorted(p.name for p in (tmp_path / "reference").glob("*.bin")):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def test_tokenizer_train_stops_promptly_inside_the_rust_trainer(tmp_path: Path) -> None:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(40000)]
    lines = (json.dumps({"text": " ".join(rng.choices(vocab, k=60))}) for _ in range(60000))
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    args = ("tokenizer", "train", str(tmp_path / "big.jsonl"), "--output", str(tmp_path / "tok"), "--vocab-size", "30000")
    for delay in (2.0, 4.0):  # the training alone takes about 10 s on an idle 2-core machine
        status, err, stopped = interrupt(tnlm(*args, cwd=tmp_path), after=delay)
        assert status != 0, "the training finished before Ctrl-C; make the input bigger"
        line = err.strip().splitlines()[-1]
        expected = "interrupted: nothing was saved; rerun the command to train again"
        assert_interrupted(status, err, line=expected if line.startswith("interrupted:") else "interrupted")
        assert stopped < 3.0, stopped
        assert not (tmp_path / "tok").exists()

