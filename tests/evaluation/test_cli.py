"""`tnlm eval` as a user runs it: tables, JSON, perplexity, passkey, and the mistakes."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from tnlm.cli.main import app, run


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """Through the console-script entry, which turns user errors into one line and exit code 2."""
    monkeypatch.setattr(sys, "argv", ["tnlm", *args])
    with pytest.raises(SystemExit) as e:
        run()
    return e.value.code, capsys.readouterr().err


def test_eval_writes_table_and_json(tiny_data, tmp_path) -> None:
    out = tmp_path / "res" / "results.json"
    args = ["eval", "tnl-tiny", "--tasks", "piqa,winogrande,perplexity", "--data-dir", str(tiny_data), "--limit", "3",
            "--text", str(tiny_data / "boolq" / "dev.jsonl"), "--text-key", "passage", "-o", str(out), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "piqa" in result.output and "acc_norm" in result.output and "bits/byte" in result.output
    data = json.loads(out.read_text())
    assert data["model"] == "tnl-tiny" and data["tnlm_version"] and data["date"].startswith("20")
    rows = {(r["task"], r["metric"]): r for r in data["results"]}
    assert set(rows) >= {("piqa", "acc"), ("piqa", "acc_norm"), ("winogrande", "acc"), ("perplexity", "bits_per_byte")}
    piqa = rows[("piqa", "acc")]
    assert piqa["items"] == 3 and 0 <= piqa["value"] <= 1 and piqa["stderr"] > 0 and piqa["paper_metric"]
    assert data["perplexity"]["mode"] == "stream" and data["perplexity"]["documents"] == 3


def test_eval_fewshot_and_passkey(tiny_data, tmp_path) -> None:
    out = tmp_path / "r.json"
    args = ["eval", "transformer-tiny", "--tasks", "copa,passkey", "-k", "2", "--data-dir", str(tiny_data), "--limit", "2",
            "--passkey-lengths", "260", "--passkey-depths", "0,1", "--passkey-trials", "1", "--train-length", "200",
            "-o", str(out), "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args, terminal_width=200)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["results"][0]["num_fewshot"] == 2
    assert [r["beyond_training_length"] for r in data["passkey"]["table"]] == [True, True]
    assert (tmp_path / "r.passkey.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_task_exits_2_listing_the_known_ones(monkeypatch, capsys, tiny_data) -> None:
    code, err = _run_cli(monkeypatch, capsys, "eval", "tnl-tiny", "--tasks", "piqa,hellaswagg", "--data-dir", str(tiny_data))
    assert code == 2 and err.startswith("error: unknown task 'hellaswagg'") and "hellaswag" in err and "\n" == err[-1]


def test_missing_task_folder_names_its_files(monkeypatch, capsys, tmp_path) -> None:
    code, err = _run_cli(monkeypatch, capsys, "eval", "tnl-tiny", "--tasks", "boolq", "--data-dir", str(tmp_path / "nope"))
    assert code == 2 and "dev.jsonl" in err and "train.jsonl" in err and "nope" in err


def test_fewshot_without_a_training_split(monkeypatch, capsys, tiny_data) -> None:
    (tiny_data / "copa" / "train.jsonl").unlink()
    code, err = _run_cli(monkeypatch, capsys, "eval", "tnl-tiny", "--tasks", "copa", "-k", "1", "--data-dir", str(tiny_data))
    assert code == 2 and "1-shot prompts need the train split" in err


def test_perplexity_needs_text_and_a_valid_model(monkeypatch, capsys, tiny_data) -> None:
    code, err = _run_cli(monkeypatch, capsys, "eval", "tnl-tiny", "--tasks", "perplexity")
    assert code == 2 and "--text" in err
    code, err = _run_cli(monkeypatch, capsys, "eval", "no-such-model", "--tasks", "piqa", "--data-dir", str(tiny_data))
    assert code == 2 and "neither a preset nor a model directory" in err


def test_bad_numbers_exit_2(monkeypatch, capsys, tiny_data) -> None:
    for flag, value in (("--limit", "0"), ("--batch-size", "0"), ("--num-fewshot", "-1")):
        code, err = _run_cli(monkeypatch, capsys, "eval", "tnl-tiny", "--tasks", "copa", "--data-dir", str(tiny_data), flag, value)
        assert code == 2 and flag in err, (flag, err)
