"""`tnlm compare`: identical models train identically, the report agrees with its JSON, a rerun continues,
and the mistakes a user makes are refused before anything is written."""

from __future__ import annotations

import json
import os
import signal

import pytest
import yaml
from typer.testing import CliRunner

from tnlm.cli.main import app, main
from tnlm.compare import compare, load_compare_config, phases
from tnlm.errors import ConfigError
from tnlm.training.logs import read_metrics

from .conftest import TNL, tiny_compare


def _losses(run_dir) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_two_identical_models_train_to_identical_losses(corpus, tmp_path):
    same = [{"name": "one", "model": "tnl-tiny", "overrides": TNL}, {"name": "two", "model": "tnl-tiny", "overrides": TNL}]
    report = compare(load_compare_config(None, raw=tiny_compare(tmp_path / "c", corpus, models=same)), log=lambda s: None)
    one, two = _losses(tmp_path / "c" / "runs" / "one"), _losses(tmp_path / "c" / "runs" / "two")
    assert len(one) == 4 and one == two
    a, b = report["models"]
    assert a["eval"]["val_loss"] == b["eval"]["val_loss"]
    assert a["curve"]["val"][-1]["val_loss"] == b["curve"]["val"][-1]["val_loss"]


def test_different_seeds_do_not_train_identically(corpus, tmp_path):
    """The check above can fail: a change of seed changes the losses."""
    raw = tiny_compare(tmp_path / "a", corpus)
    compare(load_compare_config(None, raw=raw), log=lambda s: None)
    raw2 = tiny_compare(tmp_path / "b", corpus)
    raw2["training"]["seed"] = 1
    compare(load_compare_config(None, raw=raw2), log=lambda s: None)
    assert _losses(tmp_path / "a" / "runs" / "tnl") != _losses(tmp_path / "b" / "runs" / "tnl")


def _summary_table(markdown: str) -> list[dict[str, str]]:
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != len(header) or not cells[0] or cells[0] == header[0]:
            break
        rows.append(dict(zip(header, cells)))
    return rows


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    """A whole comparison with speed, samples and plots, through the CLI."""
    tmp = tmp_path_factory.mktemp("cmp")
    raw = tiny_compare(tmp / "out", corpus, speed={"train_lengths": [16, 32], "train_tokens": 64, "train_repeats": 1,
                                                   "decode_contexts": [8, 96], "decode_tokens": 2, "decode_rounds": 2},
                       samples={"prompts": ["The for statement"], "max_new_tokens": 4})  # fmt: skip
    config = tmp / "cmp.yaml"
    config.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(app, ["compare", str(config), "budget.tokens=200"])
    assert result.exit_code == 0, result.output
    return tmp / "out", config, result.output


def test_the_report_holds_every_artefact_and_its_table_equals_the_json(finished):
    out, _, output = finished
    report = json.loads((out / "report.json").read_text())
    for name in ("report.md", "loss_vs_tokens.png", "loss_vs_time.png", "train_speed.png", "decode_speed.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert report["plan"]["steps"] == 4 and report["plan"]["tokens"] == 256  # 200 tokens -> 4 steps of 64
    rows = _summary_table((out / "report.md").read_text())
    assert [r["model"] for r in rows] == ["tnl", "transformer"]
    for row, model in zip(rows, report["models"]):
        assert float(row["val loss"]) == pytest.approx(model["eval"]["val_loss"], abs=5e-5)
        assert float(row["val ppl"]) == pytest.approx(model["eval"]["token_perplexity"], abs=5e-3)
        assert float(row["bits/byte"]) == pytest.approx(model["eval"]["bits_per_byte"], abs=5e-4)
        assert float(row["train tokens/s"].replace(",", "")) == pytest.approx(model["train"]["tokens_per_s_median"], abs=0.5)
        assert float(row["parameters"].rstrip("M")) == pytest.approx(model["parameters"] / 1e6, abs=5e-3)
        decode = next(r for r in model["speed"]["decode"] if r["context"] == 8)
        assert float(row["decode ms/token @ 8"]) == pytest.approx(decode["ms_per_token"], abs=5e-3)
    best = min(report["models"], key=lambda m: m["eval"]["val_loss"])
    assert report["verdict"]["best_val_loss"] == best["name"]
    assert f"lowest validation loss: {best['name']}" in (out / "report.md").read_text()
    assert report["verdict"]["text"] in output


def _val_documents(shards) -> list[list[int]]:
    import numpy as np

    meta = json.loads((shards / "meta.json").read_text())
    docs = []
    for bin_path in sorted(shards.glob("val-*.bin")):
        tokens = np.fromfile(bin_path, dtype=meta["dtype"]).astype(np.int64)
        ends = np.load(bin_path.with_name(bin_path.name.replace(".bin", ".idx.npy")))
        starts = np.concatenate([[0], ends[:-1]])
        docs += [tokens[a:b].tolist() for a, b in zip(starts, ends)]
    return docs


def test_the_validation_loss_is_the_models_own_on_the_whole_split(finished, corpus):
    """Recomputed here from the saved model and the shards: every document, BOS first, in disjoint
    windows of the training length (32), each scored from scratch."""
    import torch
    import torch.nn.functional as F
    from tokenizers import Tokenizer

    from tnlm.models import create_model

    out = finished[0]
    report = json.loads((out / "report.json").read_text())
    model_dir = out / "runs" / "tnl" / "model"
    model = create_model(model_dir).eval()
    bos = Tokenizer.from_file(str(model_dir / "tokenizer.json")).token_to_id("<s>")
    nll, count = 0.0, 0
    with torch.no_grad():
        for doc in _val_documents(corpus):
            seq = [bos] + doc
            for k in range(0, len(doc), 32):
                targets = torch.tensor(seq[k + 1 : k + 33])
                logits = model(torch.tensor([seq[k : k + len(targets)]])).logits[0]
                nll += F.cross_entropy(logits.float(), targets, reduction="sum").item()
                count += len(targets)
    tnl = report["models"][0]["eval"]
    assert tnl["val_tokens"] == count == json.loads((corpus / "meta.json").read_text())["splits"]["val"]["tokens"]
    assert tnl["val_loss"] == pytest.approx(nll / count, rel=1e-4)


def test_a_rerun_of_a_finished_comparison_trains_nothing_again(finished):
    out, config, _ = finished
    before = (out / "runs" / "tnl" / "metrics.jsonl").read_bytes()
    result = CliRunner().invoke(app, ["compare", str(config), "budget.tokens=200"])
    assert result.exit_code == 0, result.output
    assert "trained already" in result.output
    assert (out / "runs" / "tnl" / "metrics.jsonl").read_bytes() == before


def test_an_interrupted_comparison_continues_where_it_stopped(corpus, tmp_path, monkeypatch):
    config = load_compare_config(None, raw=tiny_compare(tmp_path / "c", corpus))
    real = phases.evaluate_model
    calls = []

    def stop_at_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(phases, "evaluate_model", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        compare(config, log=lambda s: None)
    monkeypatch.setattr(phases, "evaluate_model", real)
    assert (tmp_path / "c" / "results" / "tnl.eval.json").is_file()
    assert not (tmp_path / "c" / "results" / "transformer.eval.json").is_file()
    trained = {n: (tmp_path / "c" / "runs" / n / "metrics.jsonl").read_bytes() for n in ("tnl", "transformer")}
    lines = []
    report = compare(config, log=lines.append)
    assert sum("trained already" in line for line in lines) == 2
    assert {n: (tmp_path / "c" / "runs" / n / "metrics.jsonl").read_bytes() for n in trained} == trained
    assert all(m["eval"]["val_loss"] > 0 for m in report["models"])


def test_an_interrupted_training_resumes_from_its_checkpoint_exactly(corpus, tmp_path, monkeypatch):
    """Ctrl-C during the second model's training: its run saves a checkpoint and stops; the rerun
    resumes it, and its losses are those of a comparison that was never interrupted."""
    from tnlm.training.run import Interrupted
    from tnlm.training.trainer import Trainer

    config = load_compare_config(None, raw=tiny_compare(tmp_path / "c", corpus))
    real_step, steps = Trainer.train_step, []

    def step(self):
        out = real_step(self)
        steps.append(1)
        if len(steps) == 6:  # the transformer's second step (the tnl model trains its 4 first)
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "train_step", step)
    with pytest.raises(Interrupted):
        compare(config, log=lambda s: None)
    monkeypatch.undo()
    run = tmp_path / "c" / "runs" / "transformer"
    assert (run / "checkpoints" / "step-000002").is_dir() and not (run / "model").exists()
    report = compare(config, log=lambda s: None)
    assert json.loads((tmp_path / "c" / "results" / "transformer.train.json").read_text())["resumed"] is True
    assert report["models"][1]["train"]["steps"] == 4
    compare(load_compare_config(None, raw=tiny_compare(tmp_path / "d", corpus)), log=lambda s: None)
    assert _losses(run) == _losses(tmp_path / "d" / "runs" / "transformer")


def test_budget_in_seconds_is_sized_from_measured_speed(corpus, tmp_path):
    raw = tiny_compare(tmp_path / "c", corpus, budget={"seconds": 3, "warmup_fraction": 0.25, "validations": 2})
    report = compare(load_compare_config(None, raw=raw), log=lambda s: None)
    plan = report["plan"]
    assert set(plan["calibration"]) == {"tnl", "transformer"} and all(r > 0 for r in plan["calibration"].values())
    expected = int(3 * 0.9 / sum(1 / r for r in plan["calibration"].values()) // 64)
    assert plan["steps"] == max(2, expected)
    assert "budget.seconds = 3" in plan["basis"]
    saved = yaml.safe_load((tmp_path / "c" / "runs" / "tnl" / "config.yaml").read_text())
    assert saved["train"]["steps"] == plan["steps"]
    assert saved["schedule"]["warmup_steps"] == max(1, round(0.25 * plan["steps"]))


def test_a_model_beyond_its_context_is_skipped_with_the_reason(finished):
    report = json.loads((finished[0] / "report.json").read_text())
    transformer = report["models"][1]["speed"]["decode"]
    assert [r["context"] for r in transformer] == [8, 96]
    assert transformer[1] == {"context": 96, "skipped": "beyond its 64-token context"}
    assert "ms_per_token" in report["models"][0]["speed"]["decode"][1]  # the TransNormer has no limit
    tnl_states = {r["state_bytes"] for r in report["models"][0]["speed"]["decode"]}
    assert len(tnl_states) == 1  # a fixed-size state, whatever the context


@pytest.mark.parametrize(
    "change,match",
    [
        ({"models": [{"name": "a", "model": "tnl-tiny", "settings": {"data.seq_len": 64}}]}, "settings.data.seq_len"),
        ({"models": [{"name": "a", "model": "tnl-tiny", "settings": {"train": {"steps": 9}}}]}, "settings.train.steps"),
        ({"models": [{"name": "a", "model": "tnl-tiny"}, {"name": "a", "model": "tnl-tiny"}]}, "a repeats"),
        ({"models": [{"name": "a b", "model": "tnl-tiny"}]}, "short name"),
        ({"models": [{"name": "a", "model": "tnl-tiny", "overrides": {"decoder_layerz": 2}}]}, "decoder_layerz"),
        ({"models": [{"name": "a", "model": "tnl-huge"}]}, "neither a preset nor a model directory"),
        ({"models": [{"name": "a", "model": "tnl-tiny", "extra": 1}]}, "unknown key models\\[0\\].extra"),
        ({"models": []}, "models: must list"),
        ({"budget": {"tokens": 10, "seconds": 5}}, "tokens or seconds, not both"),
        ({"budget": {"tokens": 0}}, "budget.tokens must be a positive"),
        ({"eval": {"tasks": ["piqa"]}}, "eval.tasks needs eval.data_dir"),
        ({"speed": {"train_lengths": [0]}}, "speed.train_lengths"),
        ({"colour": 1}, "unknown key 'colour'"),
    ],
)  # fmt: skip
def test_bad_configurations_are_refused_naming_the_key(corpus, tmp_path, change, match):
    raw = tiny_compare(tmp_path / "c", corpus)
    raw.update(change)
    with pytest.raises(ConfigError, match=match):
        load_compare_config(None, raw=raw)
    assert not (tmp_path / "c").exists()


def test_the_training_may_not_set_the_model_or_output(corpus, tmp_path):
    raw = tiny_compare(tmp_path / "c", corpus)
    raw["training"]["model"] = {"name": "tnl-tiny"}
    with pytest.raises(ConfigError, match="training.model"):
        load_compare_config(None, raw=raw)


def test_an_output_folder_holding_something_else_is_refused_untouched(corpus, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty and holds no comparison"):
        compare(load_compare_config(None, raw=tiny_compare(out, corpus)), log=lambda s: None)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"


def test_a_comparison_killed_while_writing_its_first_state_starts_again(corpus, tmp_path):
    from tnlm.compare.run import STATE, prepare

    out = tmp_path / "c"
    out.mkdir()
    (out / f".{STATE}.k1ll.tmp").write_text("{")  # SIGKILL between the write and the rename
    plan = prepare(load_compare_config(None, raw=tiny_compare(out, corpus)), log=lambda s: None)
    assert plan.steps > 0 and sorted(p.name for p in out.iterdir()) == [STATE]


def test_another_comparison_in_the_same_folder_is_refused(finished, corpus):
    out, config, _ = finished
    raw = yaml.safe_load(config.read_text())
    raw["models"] = raw["models"][:1]
    with pytest.raises(ConfigError, match="holds another comparison .*models"):
        compare(load_compare_config(None, ["budget.tokens=200"], raw=raw), log=lambda s: None)


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: x\nmodels: [{name: a, model: tnl-tiny}]\n")
    assert main(["compare", str(bad)]) == 2
    assert "data.path is not set" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["tnl-vs-transformer", "ablations"])
def test_the_shipped_comparisons_load(name, corpus):
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "compare" / f"{name}.yaml"
    config = load_compare_config(path, [f"training.data.path={corpus}"])
    families = {config.train_config(m).model.name for m in config.models}
    assert families == {"tnl-tiny", "transformer-tiny"}
