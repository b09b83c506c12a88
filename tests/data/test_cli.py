import json

import yaml
from typer.testing import CliRunner

from tnlm.cli.main import app

from .test_pipeline import config, make_corpus

runner = CliRunner()


def test_data_run_pack_and_tokenizer_train(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config(tmp_path / "in", tmp_path / "clean")))
    result = runner.invoke(app, ["data", "run", str(tmp_path / "cfg.yaml"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "minhash_dedup" in result.output and (tmp_path / "clean" / "report.json").is_file()
    assert "pii" in runner.invoke(app, ["data", "report", str(tmp_path / "clean")]).output

    (tmp_path / "zh.txt").write_text("子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？", encoding="utf-8")
    (tmp_path / "en.txt").write_text("The farmer walked to the river before the rain came.")
    result = runner.invoke(app, ["tokenizer", "train", str(tmp_path / "clean"), "--output", str(tmp_path / "tok"),
                                 "--vocab-size", "500", "--held-out", str(tmp_path / "zh.txt"),
                                 "--held-out", str(tmp_path / "en.txt")])
    assert result.exit_code == 0, result.output
    assert "English: " in result.output and "Chinese: " in result.output
    assert (tmp_path / "tok" / "tokenizer.json").is_file()

    # the output folder itself: its _work stages, _stats and report.json are not documents
    result = runner.invoke(app, ["data", "pack", str(tmp_path / "clean"), "--tokenizer",
                                 str(tmp_path / "tok"), "--output", str(tmp_path / "tokens")])
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "tokens" / "meta.json").read_text())
    assert meta["splits"]["train"]["tokens"] > 1000 and "train:" in result.output
    assert meta["num_shards"] == 4
    assert meta["splits"]["train"]["documents"] + meta["splits"]["val"]["documents"] == 41


def test_data_run_with_the_datatrove_engine(tmp_path, english_docs):
    make_corpus(tmp_path / "in", english_docs)
    cfg = config(tmp_path / "in", tmp_path / "dt")
    cfg["steps"] = [{"step": "normalize"}, {"step": "pii"}]
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(app, ["data", "run", str(tmp_path / "cfg.yaml"), "--engine", "datatrove", "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert sum(1 for p in (tmp_path / "dt").glob("*.jsonl") for _ in p.open()) == 44


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    result = runner.invoke(app, ["data", "run", str(tmp_path / "missing.yaml")])
    assert result.exit_code != 0 and "cannot read pipeline config" in str(result.exception)
    assert "perplexity_tail" in runner.invoke(app, ["data", "steps"]).output


def test_cli_takes_bracketed_names_literally_and_replaces_outputs_only_when_asked(tmp_path):
    """Issues 19.3 and 19.5: `notes[1].txt` was rejected; an existing --output was overwritten."""
    (tmp_path / "notes[1].txt").write_text("The farmer walked to the river before the rain came. " * 30)
    args = ["tokenizer", "train", str(tmp_path / "notes[1].txt"), "--output", str(tmp_path / "tok"),
            "--vocab-size", "300", "--held-out", str(tmp_path / "notes[1].txt")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--overwrite" in str(again.exception)
    assert runner.invoke(app, args + ["--overwrite"]).exit_code == 0

    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"the river {i}"}) + "\n" for i in range(30)))
    pack_args = ["data", "pack", str(tmp_path / "docs.jsonl"), "--tokenizer", str(tmp_path / "tok"),
                 "--output", str(tmp_path / "tokens")]
    assert runner.invoke(app, pack_args).exit_code == 0
    other = [*args[:4], str(tmp_path / "tok2"), "--vocab-size", "290", *args[7:]]
    assert runner.invoke(app, other).exit_code == 0
    pack_args[4] = str(tmp_path / "tok2")
    refused = runner.invoke(app, pack_args)
    assert refused.exit_code != 0 and "another tokenizer" in str(refused.exception)
    assert runner.invoke(app, pack_args + ["--overwrite"]).exit_code == 0
