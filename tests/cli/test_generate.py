"""`tnlm generate` and `tnlm chat` as a user meets them, through the real entry point `main`:
a positional prompt, --tokenizer, a saved preset with its byte tokenizer, the tokenizer checked
before the weights, no transformers progress bars, and a chat that survives bad input."""

from __future__ import annotations

import io
import sys

import pytest

from tnlm.cli.main import main
from tnlm.generation import ByteTokenizer


def run(capsys, *args: str) -> tuple[int, str, str]:
    status = main(list(args))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def saved_preset(tmp_path_factory):
    """tnl-tiny saved as the README's Python example does, with its byte tokenizer bundled."""
    from tnlm.models.registry import create_model

    folder = tmp_path_factory.mktemp("my-model")
    create_model("tnl-tiny", seed=0).save_pretrained(folder)
    ByteTokenizer().save_pretrained(folder)
    return folder


def test_positional_prompt_and_its_mistakes(capsys, monkeypatch) -> None:
    status, out, err = run(capsys, "generate", "tnl-tiny", "Hello", "-n", "3")
    assert status == 0 and out.endswith("\n") and "3 generated" in err
    status, _, err = run(capsys, "generate", "tnl-tiny", "Hello", "--prompt", "Hi")
    assert status == 2 and err == "error: give the prompt once: as PROMPT or as --prompt, not both\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO("from a pipe\n"))
    status, _, err = run(capsys, "generate", "tnl-tiny", "-", "-n", "2")
    assert status == 0 and "11 prompt tokens" in err


def test_saved_preset_generates_with_its_bundled_tokenizer_and_no_progress_bars(capsys, saved_preset) -> None:
    status, out, err = run(capsys, "generate", str(saved_preset), "Hello", "-n", "4")
    assert status == 0, err
    assert "Loading weights" not in err and "it/s" not in err
    assert "[5 prompt tokens" in err  # the byte tokenizer's ids: one per byte


def test_tokenizer_option_and_the_tokenizer_checked_before_the_weights(capsys, saved_preset, tmp_path) -> None:
    (tmp_path / "tok").mkdir()
    ByteTokenizer().save_pretrained(tmp_path / "tok")
    status, _, err = run(capsys, "generate", "tnl-tiny", "Hi", "-n", "2", "--tokenizer", str(tmp_path / "tok"))
    assert status == 0, err
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((saved_preset / "config.json").read_text())
    (model / "model.safetensors").write_bytes(b"not weights")  # reading these would fail differently
    status, _, err = run(capsys, "generate", str(model), "Hi")
    assert status == 2 and "has no tokenizer" in err and "--tokenizer DIR" in err and len(err.splitlines()) == 1


def test_chat_reports_bad_input_and_goes_on(capsys, monkeypatch) -> None:
    lines = b"hello\n\n\xff\xfe broken\n/reset\nagain\n"  # then end of input (Ctrl-D)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(lines), encoding="utf-8"))
    status, out, err = run(capsys, "chat", "tnl-tiny", "-n", "3", "--system", "Be brief.")
    assert status == 0, err
    assert out.count("assistant> ") == 2  # the empty line and the broken one get no reply
    assert "error: that message is not valid UTF-8 text (character 1 stands for a byte" in err
    assert "[conversation cleared (the system message is kept)]" in err
    assert "Traceback" not in err


def test_a_model_too_big_for_the_memory_is_refused_before_loading(capsys, monkeypatch) -> None:
    monkeypatch.setattr("tnlm.devices.available_bytes", lambda device: 2**20)  # a machine with 1 MiB free
    status, _, err = run(capsys, "generate", "tnl-tiny", "hi")
    assert status == 2 and "the weights of tnl-tiny in float32: 7.3 MiB needed, cpu has 1.0 MiB free" in err
    status, _, err = run(capsys, "info", "tnl-tiny", "--forward")
    assert status == 2 and "smaller model" in err
