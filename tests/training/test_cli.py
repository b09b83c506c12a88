"""`tnlm train` as a user meets it: a finished run's model in every loader and command, the logs, and
the mistakes a careless user makes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import tnlm
from tests.helpers import REPO
from tnlm.cli.main import app
from tnlm.errors import CheckpointError, ConfigError, DataError
from tnlm.training import train
from tnlm.training.logs import read_metrics

from .conftest import tiny_config


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    """A short run through the CLI, with validation, TensorBoard and plots on."""
    tmp = tmp_path_factory.mktemp("cli")
    config = tmp / "c.yaml"
    config.write_text(tiny_config(tmp / "run", corpus).to_yaml())
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["train", str(config), "eval.every=3", "log.plot=true",
                                          "log.tensorboard=true"])  # fmt: skip
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    return tmp / "run", result.output


def test_a_run_writes_its_config_metrics_plot_and_tensorboard(finished):
    run, output = finished
    assert "validation loss" in output and f"model: {run / 'model'}" in output
    rows = read_metrics(run / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "grad_norm", "lr", "tokens", "tokens_per_s", "mfu"):
        assert all(np.isfinite(r[key]) for r in train_rows), key
    assert train_rows[-1]["tokens"] == 6 * 4 * 64 and 0 < train_rows[-1]["mfu"] < 1
    val = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6] and val[0]["val_ppl"] == pytest.approx(np.exp(val[0]["val_loss"]))
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    resolved = (run / "config.yaml").read_text()
    assert "every: 3" in resolved and "seq_len: 64" in resolved


def test_the_final_model_loads_everywhere_and_generates(finished):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = finished[0] / "model"
    ours = tnlm.create_model(model_dir)
    hf = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor([tok.encode("The for statement")])
    assert torch.equal(ours(ids).logits, hf(ids).logits)
    assert ours.config.vocab_size == len(tok) and ours.config.eos_token_id == tok.eos_token_id
    runner = CliRunner()
    generated = runner.invoke(app, ["generate", str(model_dir), "--prompt", "The", "-n", "5"])
    assert generated.exit_code == 0, generated.output
    chat = runner.invoke(app, ["chat", str(model_dir), "-n", "5"], input="hello\n")
    assert chat.exit_code == 0, chat.output


def test_print_config_resolves_without_training(tmp_path):
    result = CliRunner().invoke(app, ["train", str(REPO / "configs/train/tnl-tiny.yaml"), "optimizer.lr=5e-4", "--print-config"])
    assert result.exit_code == 0, result.output
    assert "lr: 0.0005" in result.output and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "override, error, match",
    [
        ("data.seq_len=100000", DataError, "too small for one batch"),
        ("model.name=./no/such/model", CheckpointError, r"model directory no/such/model does not exist"),
        ("model.name=tnl-tinyy", ConfigError, "neither a preset nor a model directory"),
        ("model.overrides={decoder_layer: 2}", ConfigError, r"unknown model config field model\.overrides\.decoder_layer; transnormer knows: vocab_size, decoder_embed_dim"),
        ("model.name=transformer-tiny", ConfigError, r"data\.mode=varlen packs documents with cu_seqlens, which TransformerForCausalLM does not take"),
        ("data.tokenizer=.", ConfigError, "has no tokenizer.json: set data.tokenizer"),
        ("train.device=cuda:3", ConfigError, "no CUDA device"),
    ],
    ids=["data-shorter-than-a-batch", "missing-model-dir", "unknown-preset", "unknown-model-field", "varlen-without-cu_seqlens",
         "wrong-tokenizer", "no-gpu"],
)  # fmt: skip
def test_bad_runs_are_refused_before_anything_is_written(corpus, tmp_path, override, error, match):
    extra = ("data.mode=varlen", "model.overrides={}") if "transformer" in override else ()
    if torch.cuda.is_available() and "cuda" in override:
        pytest.skip("this machine has a GPU")
    with pytest.raises(error, match=match):
        train(tiny_config(tmp_path / "run", corpus, *extra, override))
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_data_path_that_is_not_packed_data(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path .* does not exist: give the output folder of `tnlm data pack`"):
        train(tiny_config(tmp_path / "run", tmp_path / "nothing"))


def test_cli_errors_are_one_line(monkeypatch, capsys):
    from tnlm.cli.main import run

    monkeypatch.setattr("sys.argv", ["tnlm", "train", str(REPO / "configs/train/tnl-tiny.yaml"), "optimizer.lrr=1"])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown config key optimizer.lrr (did you mean optimizer.lr?)") and err.count("\n") == 1


def test_metrics_reader_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + '{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}]
