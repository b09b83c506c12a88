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
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.helpers.processes import (
    as_in_a_terminal,
    marked_env,
    marked_pids,
    marked_processes,
    scaled,
    stop_limit,
    wait_gone,
    wait_until,
)
from tnlm.data.lock import LOCK_NAME

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
    """The command in a process group of its own (pgid = pid); its output goes to files, so that a
    test that waits for an event never blocks it on a full pipe."""
    env, marker = marked_env()
    out, err = (tempfile.TemporaryFile("w+") for _ in range(2))  # noqa: SIM115 (kept with the process)
    proc = subprocess.Popen([sys.executable, "-m", "tnlm", *args], cwd=cwd, stdout=out, stderr=err, text=True,
                            start_new_session=True, env=env, preexec_fn=as_in_a_terminal)  # noqa: PLW1509 (one signal reset)
    proc.marker, proc.out, proc.err = marker, out, err
    return proc


def output(proc: subprocess.Popen) -> tuple[str, str]:
    proc.out.seek(0), proc.err.seek(0)
    return proc.out.read(), proc.err.read()


def holds_lock(proc: subprocess.Popen, folder: Path) -> bool:
    """The command has started its work: it, or its child (a run isolated from Ctrl-C), holds the
    output folder's lock (its pid is in .lock)."""
    try:
        holder = (folder / LOCK_NAME).read_text().strip()
    except OSError:
        return False
    return holder == str(proc.pid) or (holder.isdigit() and int(holder) in marked_pids(proc.marker))


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool], *, what: str) -> tuple[int, str, float]:
    """SIGINT to the group as soon as `ready()` holds (polled every 10 ms); returns (exit status,
    stderr, seconds to stop). A command that ends before the event returns its own status."""
    wait_until(ready, timeout=300, what=what, alive=lambda: proc.poll() is None)
    sent = time.monotonic()
    try:
        os.killpg(proc.pid, signal.SIGINT)
    except ProcessLookupError:
        pass  # it finished first
    limit = stop_limit()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        left = marked_processes(proc.marker)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {limit:.0f} s after Ctrl-C: {left}")
    stopped = time.monotonic() - sent
    wait_gone(proc.marker, timeout=5)  # no process of the command left behind
    return proc.returncode, output(proc)[1], stopped


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
    proc.wait(timeout=scaled(600))
    out, err = output(proc)
    assert proc.returncode == 0, err[-3000:]
    return out


def count(folder: Path, *patterns: str) -> Callable[[], int]:
    """How many files under `folder` match the patterns now (a command's finished units of work)."""
    return lambda: sum(1 for pattern in patterns for _ in folder.glob(pattern))


def after_progress(proc: subprocess.Popen, folder: Path, done: Callable[[], int], steps: int) -> Callable[[], bool]:
    """The event 'this run holds the lock and has finished `steps` more units than there were when it
    started' (0: it has just started its work)."""
    before = done()
    return lambda: holds_lock(proc, folder) and done() >= before + steps


def interrupt_runs(args: tuple[str, ...], *, cwd: Path, folder: Path, done: Callable[[], int], plan: list[int],
                   hint: str, logs: bool = False) -> list[int]:
    """Run the command again and again on the same output folder (as a user would), each run Ctrl-C'd
    once its step of `plan` more units are done; returns the units done at each interrupt. Stops at the
    first run that finishes before its event. `logs`: the command logs as it goes (only its last line
    is checked then)."""
    at = []
    for steps in plan:
        proc = tnlm(*args, cwd=cwd)
        status, err, _ = interrupt_when(proc, after_progress(proc, folder, done, steps), what=f"{steps} more units")
        if status == 0:
            break
        if logs:
            assert status in (130, -signal.SIGINT) and "Traceback" not in err, err[-2000:]
            assert err.strip().splitlines()[-1] == hint, err[-2000:]
        else:
            assert_interrupted(status, err, line=hint)
        at.append(done())
    return at


# units of work each run does before its Ctrl-C: 0 = right after it takes the folder (a fresh start, or
# a resumed one reading what is done), 1 = its first finished shard, and so on. Of the 18 units (8
# shards of the first stage, the exact and MinHash fits, 8 final shards) the plan asks for 10, so the
# first runs stop in the first stage and the last ones at the fits or in the final stage
PLAN = [0, 1, 2, 0, 2, 1, 3, 1]


def test_data_run_stops_cleanly_at_any_point_and_resumes(tmp_path: Path) -> None:
    inputs = corpus(tmp_path / "in")
    run_to_end("data", "run", str(pipeline_yaml(tmp_path / "reference.yaml", inputs, tmp_path / "reference")), "--quiet",
               cwd=tmp_path)
    cfg = pipeline_yaml(tmp_path / "cfg.yaml", inputs, tmp_path / "out")
    units = count(tmp_path / "out", "**/_stats/*.json", "_work/fit-*.json")
    at = interrupt_runs(("data", "run", str(cfg), "--quiet"), cwd=tmp_path, folder=tmp_path / "out", done=units,
                        plan=PLAN, hint=RESUME)
    assert len(at) >= 6 and at == sorted(at), at  # resumed runs go on from where the last one stopped
    assert len(at) < len(PLAN) or at[-1] >= sum(PLAN), at
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
        proc = tnlm("data", "run", str(cfg), "--quiet", cwd=tmp_path)
        at = time.monotonic() + scaled(rng.uniform(0.2, 6.0))
        status, err, _ = interrupt_when(proc, lambda at=at: time.monotonic() >= at, what="the moment")
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
    tasks = count(tmp_path / "out", "_work/datatrove/logs/stage0/completions/*")  # 8 tasks
    at = interrupt_runs(args, cwd=tmp_path, folder=tmp_path / "out", done=tasks, plan=[0, 1, 2], hint=RESUME,
                        logs=True)
    assert len(at) == 3 and at == sorted(at), at
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
    shards = count(tmp_path / "out", "shard-*.json")  # 8, one per input file
    at = interrupt_runs(args, cwd=tmp_path, folder=tmp_path / "out", done=shards, plan=[0, 1, 2, 1], hint=RESUME)
    assert len(at) >= 3 and at == sorted(at), at
    run_to_end(*args, cwd=tmp_path)
    for name in sorted(p.name for p in (tmp_path / "reference").glob("*.bin")):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def trainer_busy(proc: subprocess.Popen, cpu: float) -> Callable[[], bool]:
    """The event 'the isolated training process (the command's child) has computed for `cpu` seconds':
    reading the input takes a fraction of a second, so it is then inside the Rust trainer."""
    return lambda: any(cpu_seconds(pid) >= cpu for pid in marked_pids(proc.marker) if pid != proc.pid)


def test_tokenizer_train_stops_promptly_inside_the_rust_trainer(tmp_path: Path) -> None:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = ["".join(rng.choices(letters, k=rng.randint(3, 10))) for _ in range(40000)]
    lines = (json.dumps({"text": " ".join(rng.choices(vocab, k=60))}) for _ in range(60000))
    (tmp_path / "big.jsonl").write_text("\n".join(lines) + "\n")
    args = ("tokenizer", "train", str(tmp_path / "big.jsonl"), "--output", str(tmp_path / "tok"), "--vocab-size", "30000")
    expected = "interrupted: nothing was saved; rerun the command to train again"
    for cpu in (1.0, 2.0):  # the training takes about 5 s of CPU
        proc = tnlm(*args, cwd=tmp_path)
        status, err, stopped = interrupt_when(proc, trainer_busy(proc, cpu), what=f"{cpu} s of training")
        assert status != 0, "the training finished before Ctrl-C; make the input bigger"
        assert_interrupted(status, err, line=expected)
        assert stopped < scaled(3.0), stopped
        assert not (tmp_path / "tok").exists()
