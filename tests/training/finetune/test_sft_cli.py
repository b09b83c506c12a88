"""The commands as a user types them: tnlm finetune (LoRA), tnlm merge-lora, tnlm chat with the result;
mistakes give one `error:` line and exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tests.helpers import REPO
from tnlm.cli.main import app
from tnlm.errors import CheckpointError, ConfigError, DataError

from .conftest import assistant, ft_config, user, write_chats


@pytest.fixture
def config(base_dirs, tmp_path):
    """A LoRA run's YAML over six small dialogues, as a user would save it."""
    chats = write_chats(tmp_path / "chats.jsonl", [[user(f"What is {w}?"), assistant(f"ANSWER: {w} [ok]")]
                                                   for w in ("a cat", "a dog", "rain", "the sun", "a boat", "a tree")])
    path = tmp_path / "sft.yaml"
    path.write_text(ft_config(tmp_path / "run", base_dirs["tnl-tiny"], f"data.path={chats}").to_yaml())
    return path


def test_finetune_merge_and_chat_from_the_command_line(base_dirs, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    run = cli.invoke(app, ["finetune", str(config), "train.steps=3"])
    assert run.exit_code == 0, run.output
    adapter = tmp_path / "run" / "adapter"
    assert f"adapter: {adapter}" in run.output and "tnlm merge-lora" in run.output
    merge = cli.invoke(app, ["merge-lora", str(base_dirs["tnl-tiny"]), str(adapter), "merged"])
    assert merge.exit_code == 0 and "try: tnlm chat merged" in merge.output, merge.output
    chat = cli.invoke(app, ["chat", "merged", "-n", "4"], input="What is a cat?\n/exit\n")
    assert chat.exit_code == 0 and "assistant> " in chat.output, chat.output
    again = cli.invoke(app, ["merge-lora", str(base_dirs["tnl-tiny"]), str(adapter), "merged"])
    assert isinstance(again.exception, ConfigError) and "--overwrite" in str(again.exception)
    rerun = cli.invoke(app, ["finetune", str(config), "train.steps=3"])
    assert isinstance(rerun.exception, ConfigError) and "add --resume to continue it" in str(rerun.exception)
    printed = cli.invoke(app, ["finetune", str(config), "method=full", "--print-config"])
    assert "method: full" in printed.output and not (tmp_path / "run" / "model").exists()


@pytest.mark.parametrize(
    "override, error, message",
    [
        ("lora.target_modules=[q_proj]", ConfigError, "its linear layers are: l1, l2, l3, lm_head, out_proj, qkvu_proj"),
        ("data.path=missing.jsonl", DataError, "input 'missing.jsonl' does not exist"),
        ("data.pakcing=true", ConfigError, "did you mean data.packing?"),
        ("model.name=nowhere/model", CheckpointError, "does not exist"),
    ],
    ids=["target", "data", "typo", "model"],
)
def test_mistakes_are_refused_with_what_to_do(config, tmp_path, monkeypatch, override, error, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["finetune", str(config), override])
    assert isinstance(result.exception, error) and message in str(result.exception)


def test_the_command_prints_one_error_line_and_exits_2(config, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "src"))
    result = subprocess.run([sys.executable, "-m", "tnlm", "finetune", str(config), "lora.target_modules=[q_proj]"],
                            cwd=tmp_path, env=env, text=True, capture_output=True, timeout=600)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().splitlines()[-1] == errors[0]
    assert "lora.target_modules names q_proj" in errors[0]
