"""`tnlm quickstart` at a tiny scale: interrupted, then continued to the end; every artefact, a summary
whose numbers are the comparison's, a rerun that only points at the summary, and the mistakes a user makes
refused before anything is written."""

from __future__ import annotations

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from tnlm.cli.main import app, main
from tnlm.data.files import write_documents
from tnlm.data.sources import BuiltinSource
from tnlm.quickstart import Options, Scale, quickstart, stages
from tnlm.quickstart.plan import STAGES, STATE, State
from tnlm.quickstart.summary import SUMMARY

TNL = {"decoder_embed_dim": 32, "hidden_dim": 32, "decoder_attention_heads": 2, "glu_dim": 64, "decoder_layers": 2,
       "linear_use_lrpe_list": [1, 0]}  # fmt: skip
TRANSFORMER = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, "num_hidden_layers": 2,
               "max_position_embeddings": 48}  # fmt: skip
TINY = Scale(tnl=TNL, transformer=TRANSFORMER, vocab_size=600, seq_len=32, batch_size=2, speed_lengths=(16, 64),
             speed_tokens=64, decode_tokens=2, chat_seq_len=96, max_new_tokens=6)  # fmt: skip


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """The user's text: 80 documents of Python's help topics, as JSON Lines."""
    folder = tmp_path_factory.mktemp("text")
    docs = [d for d in BuiltinSource(kind="docs", max_files=0).read("0/1") if len(d.text.split()) > 60][:80]
    write_documents(folder / "docs.jsonl", docs)
    return folder


@pytest.fixture(scope="module")
def finished(text, tmp_path_factory):
    """A quickstart stopped by Ctrl-C as its fine-tuning starts, then run again to the end."""
    out = tmp_path_factory.mktemp("qs") / "out"
    options = Options(output=str(out), minutes=0.2, data=str(text), scale=TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    real, lines = stages.run_finetune, []
    try:
        stages.run_finetune = _interrupt
        with pytest.raises(KeyboardInterrupt):
            quickstart(options, log=lines.append, progress=False)
        before = json.loads((out / "quickstart.json").read_text())
        stages.run_finetune = real
        quickstart(options, log=lines.append, progress=False)
    finally:
        stages.run_finetune = real
        torch.set_num_threads(threads)
    return out, options, before, lines


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def test_an_interrupted_quickstart_continues_where_it_stopped(finished):
    out, _, before, lines = finished
    assert list(before["stages"]) == ["data", "tokenizer", "pack", "compare"]
    after = json.loads((out / "quickstart.json").read_text())
    assert list(after["stages"]) == list(STAGES)
    for name in before["stages"]:
        assert after["stages"][name] == before["stages"][name]  # kept, not run again
    assert sum(line.startswith("[4/7]") for line in lines) == 1 and sum(line.startswith("[5/7]") for line in lines) == 2


def test_every_artefact_is_where_the_summary_says(finished):
    out = finished[0]
    summary = (out / SUMMARY).read_text()
    for path in (stages.clean_dir(out) / "report.json", stages.tokenizer_dir(out) / "tokenizer.json",
                 stages.packed_dir(out) / "meta.json", out / "compare" / "report.md", out / "compare" / "report.json",
                 out / "compare" / "loss_vs_tokens.png", out / "compare" / "decode_speed.png",
                 out / "compare" / "runs" / "transnormer" / "model" / "model.safetensors",
                 out / "compare" / "runs" / "transformer" / "model" / "model.safetensors",
                 out / "chat" / "adapter", out / "chat" / "model" / "model.safetensors"):  # fmt: skip
        assert path.exists(), path
    for folder in (stages.tokenizer_dir(out), stages.packed_dir(out), out / "chat" / "model"):
        assert str(folder) in summary
    assert f"tnlm chat {out / 'chat' / 'model'}" in summary
    assert f"tnlm serve {out / 'chat' / 'model'}" in summary
    for png in ("loss_vs_tokens.png", "loss_vs_time.png", "train_speed.png", "decode_speed.png"):
        assert f"(compare/{png})" in summary


def _table_rows(markdown: str, first_header: str) -> list[dict[str, str]]:
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_the_summary_numbers_are_the_comparisons(finished):
    out = finished[0]
    summary = (out / SUMMARY).read_text()
    report = json.loads((out / "compare" / "report.json").read_text())
    models = {m["name"]: m for m in report["models"]}
    rows = _table_rows(summary, "model")
    assert [r["model"] for r in rows] == ["transnormer", "transformer"]
    for row in rows:
        m = models[row["model"]]
        assert float(row["val loss"]) == pytest.approx(m["eval"]["val_loss"], abs=5e-5)
        assert float(row["val ppl"]) == pytest.approx(m["eval"]["token_perplexity"], abs=5e-3)
        assert float(row["train tokens/s"].replace(",", "")) == pytest.approx(m["train"]["tokens_per_s_median"], abs=0.5)
    tnl, tf = models["transnormer"]["eval"]["val_loss"], models["transformer"]["eval"]["val_loss"]
    quality = next(line for line in summary.splitlines() if line.startswith("- **Quality**"))
    assert f"{tnl:.4f} (TransNormer) vs {tf:.4f} (Transformer)" in quality
    assert f"the {'TransNormer' if tnl < tf else 'Transformer'} is lower" in quality
    # the Transformer's 48-token context rules out decoding after 64 tokens; both decoded after 16
    decoding = next(line for line in summary.splitlines() if line.startswith("- **Decoding**"))
    at16 = {n: next(r for r in m["speed"]["decode"] if r["context"] == 16) for n, m in models.items()}
    assert f"TransNormer {at16['transnormer']['ms_per_token']:.2f} ->" in decoding
    assert models["transformer"]["speed"]["decode"][1] == {"context": 64, "skipped": "beyond its 48-token context"}


def test_the_chat_model_answers_held_out_questions(finished):
    out = finished[0]
    chat = json.loads((out / "quickstart.json").read_text())["stages"]["chat"]
    assert len(chat["exchanges"]) == stages.CHAT_QUESTIONS
    summary = (out / SUMMARY).read_text()
    for x in chat["exchanges"]:
        assert x["question"] and x["expected"] and f"- you: {x['question']}" in summary
    finetune = json.loads((out / "quickstart.json").read_text())["stages"]["finetune"]
    assert finetune["steps"] >= 4 and finetune["base"].endswith("runs/transnormer/model")


def test_a_finished_quickstart_rerun_only_points_at_its_summary(finished, monkeypatch):
    import tnlm.cli.quickstart

    monkeypatch.setattr(tnlm.cli.quickstart, "SCALE", TINY)
    out, options, _, _ = finished
    before = (out / "quickstart.json").read_bytes()
    result = CliRunner().invoke(app, ["quickstart", "--minutes", "0.2", "--data", options.data, "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"this quickstart is finished: its summary is {out / SUMMARY}"
    assert (out / "quickstart.json").read_bytes() == before


def test_a_rerun_with_other_options_is_refused(finished, capsys, monkeypatch):
    import tnlm.cli.quickstart

    monkeypatch.setattr(tnlm.cli.quickstart, "SCALE", TINY)
    out, options, _, _ = finished
    assert main(["quickstart", "--minutes", "3", "--data", options.data, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds a quickstart with other settings (minutes differ)" in err


@pytest.mark.parametrize("minutes", ["0", "-1", "nan"])
def test_a_budget_that_is_not_positive_is_refused(tmp_path, capsys, minutes):
    assert main(["quickstart", "--minutes", minutes, "--output", str(tmp_path / "out")]) == 2
    assert "--minutes must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_folder_holding_something_else_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["quickstart", "--output", str(out)]) == 2
    assert re.search(r"is not empty and holds no quickstart", capsys.readouterr().err)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"


def test_a_quickstart_killed_while_writing_its_first_state_is_not_something_else(tmp_path):
    out = tmp_path / "qs"
    out.mkdir()
    (out / f".{STATE}.x7k2.tmp").write_text('{"sett')  # SIGKILL between the write and the rename
    state = State.claim(out, {"minutes": 1})
    assert sorted(p.name for p in out.iterdir()) == [STATE] and state.data["settings"] == {"minutes": 1}


def test_data_in_an_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["quickstart", "--data", str(tmp_path / "empty"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is an empty folder" in err
    assert not (tmp_path / "out").exists()


def test_data_that_does_not_exist_is_refused(tmp_path, capsys):
    assert main(["quickstart", "--data", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_ctrl_c_says_how_to_continue(text, tmp_path, capsys, monkeypatch):
    """Ctrl-C in a stage: one line naming the command that continues, exit status 130, the stage not
    marked done."""
    import tnlm.cli.quickstart

    monkeypatch.setattr(tnlm.cli.quickstart, "SCALE", TINY)
    monkeypatch.setattr(stages, "run_data", _interrupt)
    out = tmp_path / "out"
    assert main(["quickstart", "--minutes", "0.2", "--data", str(text), "--output", str(out), "-q"]) == 130
    err = capsys.readouterr().err
    assert f"run `tnlm quickstart --minutes 0.2 --output {out} --data {text}` again to continue" in err
    assert json.loads((out / "quickstart.json").read_text())["stages"] == {}


def test_the_cleaning_is_that_of_the_shipped_pipeline_config(tmp_path):
    """The quickstart cleans as `tnlm data run configs/data/quickstart.yaml` does (the README's by-hand path)."""
    import yaml

    from tests.helpers import REPO

    shipped = yaml.safe_load((REPO / "configs" / "data" / "quickstart.yaml").read_text())
    ours = stages.pipeline_config(Options(output=str(tmp_path)), tmp_path)
    assert ours["steps"] == shipped["steps"] and ours["source"] == shipped["source"]


@pytest.mark.parametrize("module", ["peft", "rjieba"])
def test_a_missing_package_is_named_before_any_work(tmp_path, capsys, monkeypatch, module):
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if `pip install -e .` without the quickstart extra
    assert main(["quickstart", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"needs {module}" in err and "pip install -e '.[quickstart]'" in err
    assert not (tmp_path / "out").exists()


def test_no_progress_reaches_the_training_runs(tmp_path):
    """--quiet (progress=False): the comparison's and the fine-tuning's runs show no progress bar either;
    the comparison's fingerprint leaves the runs' log settings out, so a rerun with or without --quiet
    continues the same comparison."""
    from tnlm.compare import load_compare_config
    from tnlm.compare.run import _fingerprint
    from tnlm.quickstart.plan import Budget
    from tnlm.training.config import load_finetune_config

    options = Options(output=str(tmp_path), minutes=0.2, scale=TINY)
    budget = Budget.of(options)
    quiet, loud = (stages.compare_raw(options, tmp_path, budget, progress=p) for p in (False, True))
    assert quiet["training"]["log"]["progress"] is False and loud["training"]["log"]["progress"] is True
    assert _fingerprint(load_compare_config(None, raw=quiet)) == _fingerprint(load_compare_config(None, raw=loud))
    overrides = stages.finetune_overrides(options, tmp_path, budget, tokens_per_s=1000.0, progress=False)
    assert load_finetune_config(None, overrides).log.progress is False
