"""Exact resume after real kills and signals of a `tnlm train` process, checkpoint retention, and the
refusals that keep two runs from mixing in one directory."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from tnlm.cli.main import app
from tnlm.errors import CheckpointError, ConfigError
from tnlm.training import train
from tnlm.training.checkpoint import CheckpointManager
from tnlm.training.logs import read_metrics
from tnlm.training.run import StopSignals

from .conftest import cli_env, tiny_config, tnlm_command

STEPS = 40
RUN = ("train.steps=40", "checkpoint.every=4", "eval.every=10", "checkpoint.keep=2")


def write_config(tmp: Path, corpus: Path, name: str) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(tiny_config(tmp / name, corpus, *RUN).to_yaml())
    return path


def history(run_dir: Path) -> list[dict]:
    """Every metric but wall-clock speed: losses, grad norms, lrs, token counts, validation losses."""
    drop = ("tokens_per_s", "mfu", "time")
    return [{k: v for k, v in row.items() if k not in drop} for row in read_metrics(run_dir / "metrics.jsonl")]


def signal_at(config: Path, *, cwd: Path, step: int, sig: int, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Start `tnlm train`, wait until it logged `step`, send `sig`; the finished process."""
    metrics = Path(config.read_text().split("output: ")[1].split("\n")[0]) / "metrics.jsonl"
    proc = subprocess.Popen(tnlm_command("train", str(config), *extra), cwd=cwd, env=cli_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while max((r["step"] for r in read_metrics(metrics)), default=0) < step:
        assert proc.poll() is None, f"the run ended before step {step}: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "the run did not reach the step in time"
        time.sleep(0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> list[dict]:
    """The uninterrupted run, in this process (one thread, like the `tnlm` subprocesses)."""
    tmp = tmp_path_factory.mktemp("reference")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs before the per-test one-thread fixture
    try:
        done = CliRunner().invoke(app, ["train", str(write_config(tmp, corpus, "run"))])
    finally:
        torch.set_num_threads(before)
    assert done.exit_code == 0, done.output
    rows = history(tmp / "run")
    assert len([r for r in rows if "loss" in r]) == STEPS and len([r for r in rows if "val_loss" in r]) == 4
    return rows


def test_sigkill_then_resume_gives_bitwise_the_same_losses(corpus, tmp_path, reference):
    config = write_config(tmp_path, corpus, "run")
    killed = signal_at(config, cwd=tmp_path, step=9, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "run" / "model").exists()
    assert CheckpointManager(tmp_path / "run" / "checkpoints", keep=2).latest() in (8, 12)
    done = CliRunner().invoke(app, ["train", str(config), "--resume"])
    assert done.exit_code == 0, done.output
    assert "resumed at step" in done.output
    assert history(tmp_path / "run") == reference


def signal_self_at(metrics: Path, *, step: int, sig: int) -> threading.Thread:
    """Send `sig` to this process once the run logged `step` and its stop handler is installed."""

    def watch() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            handler = signal.getsignal(sig)
            installed = isinstance(getattr(handler, "__self__", None), StopSignals)
            if installed and max((r["step"] for r in read_metrics(metrics)), default=0) >= step:
                os.kill(os.getpid(), sig)
                return
            time.sleep(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigterm_and_sigint_save_a_checkpoint_and_say_how_to_resume(corpus, tmp_path, reference):
    """The signals arrive at the CLI running in this process (a watcher thread sends them)."""
    config = write_config(tmp_path, corpus, "run")
    metrics = tmp_path / "run" / "metrics.jsonl"
    runner = CliRunner()
    signal_self_at(metrics, step=6, sig=signal.SIGTERM)
    stopped = runner.invoke(app, ["train", str(config)])
    assert stopped.exit_code == 143, stopped.output
    last = stopped.stderr.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM at step ") and last.endswith(f"Resume with: tnlm train {config} --resume")
    step = int(last.split("at step ")[1].split(";")[0])
    assert CheckpointManager(tmp_path / "run" / "checkpoints", keep=2).latest() == step  # saved on the signal
    signal_self_at(metrics, step=step + 5, sig=signal.SIGINT)
    interrupted = runner.invoke(app, ["train", str(config), "--resume"])
    assert interrupted.exit_code == 130 and "stopped: SIGINT" in interrupted.stderr
    done = runner.invoke(app, ["train", str(config), "--resume"])
    assert done.exit_code == 0, done.output
    assert history(tmp_path / "run") == reference


def test_checkpoints_keep_the_newest_and_the_final_model_holds_the_trained_weights(corpus, tmp_path):
    cfg = tiny_config(tmp_path / "run", corpus, "train.steps=5", "checkpoint.every=1", "checkpoint.keep=2")
    result = train(cfg)
    manager = CheckpointManager(tmp_path / "run" / "checkpoints", keep=2)
    assert manager.steps() == [4, 5]
    state, meta = manager.load(5)
    assert meta["step"] == 5 and state["progress"] == {"step": 5, "tokens": 5 * 4 * 64}
    saved = load_file(str(result.model_dir / "model.safetensors"))
    for name, tensor in saved.items():  # checkpoints keep fused projections (qkvu) as (parts, n, d)
        assert torch.equal(tensor, state["model"][name].reshape(tensor.shape)), name
    assert (result.model_dir / "tokenizer.json").is_file()


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(corpus, tmp_path):
    resource = pytest.importorskip("resource")
    from tnlm.training.run import build_trainer

    trainer, _ = build_trainer(tiny_config(tmp_path / "run", corpus))
    manager = CheckpointManager(tmp_path / "ckpt", keep=3)
    trainer.train_step()
    manager.save(1, trainer.state_dict(), meta={})
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train_step()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, old_limit[1]))  # files stop growing at 200 kB
    try:
        with pytest.raises(CheckpointError, match=r"could not write the checkpoint of step 2 .*previous checkpoint .*step-000001 is intact"):
            manager.save(2, trainer.state_dict(), meta={})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert manager.steps() == [1]
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step-000001"]  # no half-written leftovers
    state, _ = manager.load(1)
    for name, tensor in before.items():
        assert torch.equal(state["model"][name].reshape(tensor.shape), tensor)


def test_resume_refuses_another_config_or_model_and_a_new_run_refuses_a_used_directory(corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, corpus, "train.steps=3"))
    with pytest.raises(ConfigError, match="already holds a run .*add --resume"):
        train(tiny_config(out, corpus, "train.steps=3"))
    with pytest.raises(ConfigError, match=r"(?s)another configuration.*optimizer\.lr: 0\.003 in the run, 0\.01 now"):
        train(tiny_config(out, corpus, "train.steps=3", "optimizer.lr=0.01"), resume=True)
    with pytest.raises(ConfigError, match=r"(?s)model\.name: 'tnl-tiny' in the run, 'transformer-tiny' now"):
        train(tiny_config(out, corpus, "train.steps=3", "model.name=transformer-tiny", "model.overrides={}"), resume=True)
    # changing how often it validates is fine: the finished run just ends again
    result = train(tiny_config(out, corpus, "train.steps=3", "eval.every=1"), resume=True)
    assert result.step == 3


def test_resume_refuses_a_checkpoint_trained_on_other_data(corpus, tmp_path):
    out = tmp_path / "run"
    train(tiny_config(out, corpus, "train.steps=2", "checkpoint.every=1"))
    meta = out / "checkpoints" / "step-000002" / "meta.json"
    meta.write_text(meta.read_text().replace('"train_tokens": ', '"train_tokens": 1'))
    with pytest.raises(CheckpointError, match="trained on other data"):
        train(tiny_config(out, corpus, "train.steps=2", "checkpoint.every=1"), resume=True)
