"""The data commands as a user meets them: whole step descriptions, a missing optional package named
before any work, --input/--output over a shipped config, no blank lines from the tokenizer trainer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from tnlm.cli.main import main
from tnlm.data.registry import STEPS


def test_data_steps_prints_each_description_whole(capsys) -> None:
    assert main(["data", "steps"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    for name, cls in STEPS.items():
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        assert f"{name} {summary}" in printed, name


def test_a_missing_optional_package_is_named_before_any_work(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "rjieba", None)  # as if `pip install -e .` without the data extra
    cfg = yaml.safe_load(Path("configs/data/quickstart.yaml").read_text())
    cfg["output"] = str(tmp_path / "out")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["data", "run", str(tmp_path / "cfg.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs rjieba" in err and "pip install 'tnlm[data]'" in err
    assert not (tmp_path / "out").exists()


def test_input_and_output_options_override_the_config(tmp_path: Path, capsys) -> None:
    docs = [{"id": str(i), "text": f"The farmer number {i} walked to the river and looked at the water."} for i in range(5)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = {"source": {"type": "files", "paths": ["data/raw/nowhere/*.jsonl"], "text_key": "text"},
           "output": "data/clean/unused", "steps": [{"step": "normalize"}]}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    args = ["data", "run", str(tmp_path / "cfg.yaml"), "--input", str(tmp_path / "docs.jsonl"), "-o", str(tmp_path / "out"), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    assert sum(1 for _ in (tmp_path / "out").glob("shard-*.jsonl")) == 1


def test_tokenizer_train_prints_no_blank_lines(tmp_path: Path, capsys) -> None:
    (tmp_path / "a.txt").write_text("hello world, the quick brown fox jumps over the lazy dog\n" * 20)
    assert main(["tokenizer", "train", str(tmp_path / "a.txt"), "--output", str(tmp_path / "tok"), "--vocab-size", "300"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("saved ") and "\n\n" not in out


def test_skipped_lines_are_counted_in_the_table_with_their_line_numbers(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # short paths, so the table cell does not wrap
    good = json.dumps({"text": "The farmer walked to the river and looked at the water for a long time."})
    Path("a.jsonl").write_text("\n".join([good, "{broken", good.replace("farmer", "sailor"), "[1, 2]"]) + "\n")
    Path("c.yaml").write_text(yaml.safe_dump({"source": {"type": "files", "paths": ["a.jsonl"]}, "output": "out",
                                              "steps": [{"step": "normalize"}]}))
    assert main(["data", "run", "c.yaml", "-q"]) == 0
    out = capsys.readouterr().out
    assert "malformed_lines=2" in out and "(first at a.jsonl:2, a.jsonl:4)" in out, out
