"""The contract for ordinary mistakes, checked as the CLI grows: each misuse below prints exactly one
line, `error: ...`, naming what is wrong (the expected words), with no traceback and nothing on
stdout, and exits 2. Runs through `main`, the console script's own error path."""

from __future__ import annotations

import errno
import json

import pytest
import torch
import yaml

from tnlm.cli.main import _os_error_message, main
from tnlm.generation import ByteTokenizer

GOOD_STEPS = [{"step": "normalize"}]

# (arguments with {tmp} for the fixture folder, words the one-line error must contain)
CASES: list[tuple[str, list[str], str]] = [
    # usage: arguments and numbers
    ("missing-model", ["info"], "Missing argument 'MODEL'"),
    ("unknown-command", ["nope"], "No such command 'nope'"),
    ("unknown-option", ["info", "tnl-tiny", "--bogus"], "No such option: --bogus"),
    ("seq-len-text", ["info", "tnl-tiny", "--forward", "--seq-len", "abc"], "'--seq-len'"),
    ("seq-len-zero", ["info", "tnl-tiny", "--forward", "--seq-len", "0"], "'--seq-len'"),
    ("seq-len-negative", ["info", "tnl-tiny", "--forward", "--seq-len", "-3"], "'--seq-len'"),
    ("max-new-tokens-zero", ["generate", "tnl-tiny", "hi", "-n", "0"], "'--max-new-tokens'"),
    ("seed-too-big", ["generate", "tnl-tiny", "hi", "--seed", str(2**70)], "'--seed'"),
    ("seed-negative", ["generate", "tnl-tiny", "hi", "--seed", "-1"], "'--seed'"),
    ("top-k-fraction", ["generate", "tnl-tiny", "hi", "--top-k", "1.5"], "'--top-k'"),
    # model names and directories
    ("unknown-preset", ["info", "tnl-nope"], "neither a preset nor a model directory"),
    ("missing-directory", ["info", "./no-such-model"], "does not exist"),
    ("directory-without-config", ["info", "{tmp}/empty"], "has no config.json"),
    ("config-not-json", ["info", "{tmp}/badjson"], "not valid JSON"),
    ("config-of-llama", ["info", "{tmp}/llama"], "holds a model of type 'llama'"),
    ("generate-unknown-preset", ["generate", "tnl-nope", "hi"], "neither a preset nor a model directory"),
    # devices and dtypes
    ("device-banana", ["generate", "tnl-tiny", "hi", "--device", "banana"], "device 'banana' is not a device name"),
    ("device-cuda", ["generate", "tnl-tiny", "hi", "--device", "cuda"], "no CUDA GPU"),
    ("device-cuda-7", ["chat", "tnl-tiny", "--device", "cuda:7"], "'cuda:7'"),
    ("device-xpu", ["generate", "tnl-tiny", "hi", "--device", "xpu"], "tnlm runs on cpu, cuda or mps"),
    ("dtype-float16", ["generate", "tnl-tiny", "hi", "--dtype", "float16"], "dtype 'float16' is not supported"),
    ("dtype-int8", ["chat", "tnl-tiny", "--dtype", "int8"], "dtype 'int8' is not supported"),
    # sampling parameters
    ("temperature-nan", ["generate", "tnl-tiny", "hi", "--temperature", "nan"], "temperature must be a finite number"),
    ("temperature-inf", ["generate", "tnl-tiny", "hi", "--temperature", "inf"], "temperature must be a finite number"),
    ("temperature-negative", ["generate", "tnl-tiny", "hi", "--temperature", "-1"], "temperature must be >= 0"),
    ("top-p-zero", ["generate", "tnl-tiny", "hi", "--top-p", "0"], "top_p must be in (0, 1]"),
    ("top-p-nan", ["generate", "tnl-tiny", "hi", "--top-p", "nan"], "top_p must be a finite number"),
    ("top-k-negative", ["generate", "tnl-tiny", "hi", "--top-k", "-2"], "top_k must be >= 0"),
    ("repetition-penalty-nan", ["generate", "tnl-tiny", "hi", "--repetition-penalty", "nan"], "repetition_penalty must be a finite number"),
    ("repetition-penalty-zero", ["generate", "tnl-tiny", "hi", "--repetition-penalty", "0"], "repetition_penalty must be > 0"),
    ("chat-temperature-nan", ["chat", "tnl-tiny", "--temperature", "nan"], "temperature must be a finite number"),
    ("compile-and-reference", ["generate", "tnl-tiny", "hi", "--compile", "--reference"], "--reference and --compile exclude each other"),
    ("chat-compile-and-reference", ["chat", "tnl-tiny", "--compile", "--reference"], "--reference and --compile exclude each other"),
    # prompts
    ("no-prompt", ["generate", "tnl-tiny"], "give a prompt"),
    ("empty-prompt", ["generate", "tnl-tiny", ""], "the prompt is empty"),
    ("prompt-invalid-bytes", ["generate", "tnl-tiny", "caf\udce9"], "the prompt is not valid UTF-8"),
    ("prompt-twice", ["generate", "tnl-tiny", "a", "-p", "b"], "give the prompt once"),
    ("empty-stop-string", ["generate", "tnl-tiny", "hi", "--stop", ""], "stop must be a list of non-empty strings"),
    ("system-invalid-bytes", ["chat", "tnl-tiny", "--system", "\udcff"], "the system message is not valid UTF-8"),
    # tokenizers
    ("tokenizer-missing", ["generate", "tnl-tiny", "hi", "--tokenizer", "{tmp}/no-tok"], "does not exist"),
    ("model-without-tokenizer", ["generate", "{tmp}/model", "hi"], "has no tokenizer"),
    ("tokenizer-truncated", ["generate", "tnl-tiny", "hi", "--tokenizer", "{tmp}/badtok"], "cannot be read"),
    ("chat-tokenizer-empty-folder", ["chat", "tnl-tiny", "--tokenizer", "{tmp}/empty"], "has no tokenizer"),
    # evaluation
    ("eval-unknown-task", ["eval", "tnl-tiny", "--tasks", "nope"], "unknown task 'nope'"),
    ("eval-perplexity-without-text", ["eval", "tnl-tiny", "--tasks", "perplexity"], "pass --text FILE"),
    ("eval-limit-negative", ["eval", "tnl-tiny", "--tasks", "piqa", "--limit", "-1"], "--limit must be > 0"),
    ("eval-passkey-lengths", ["eval", "tnl-tiny", "--tasks", "passkey", "--passkey-lengths", "abc"], "comma-separated numbers"),
    ("eval-device-banana", ["eval", "tnl-tiny", "--tasks", "piqa", "--device", "banana"], "device 'banana' is not a device name"),
    ("eval-dtype-float16", ["eval", "tnl-tiny", "--tasks", "piqa", "--dtype", "float16"], "dtype 'float16' is not supported"),
    ("eval-model-without-tokenizer", ["eval", "{tmp}/model", "--tasks", "perplexity", "--text", "{tmp}/docs.jsonl"], "has no tokenizer"),
    # data pipelines
    ("pipeline-missing", ["data", "run", "{tmp}/missing.yaml"], "cannot read pipeline config"),
    ("pipeline-bad-yaml", ["data", "run", "{tmp}/bad.yaml"], "is not valid YAML"),
    ("pipeline-not-mapping", ["data", "run", "{tmp}/list.yaml"], "a pipeline config is a mapping"),
    ("pipeline-workers-negative", ["data", "run", "{tmp}/workers.yaml"], "workers: must be a whole number"),
    ("pipeline-unknown-step", ["data", "run", "{tmp}/step.yaml"], "unknown step 'sparkle'"),
    ("pipeline-engine", ["data", "run", "{tmp}/good.yaml", "--engine", "spark"], "--engine must be tnlm or datatrove"),
    ("pipeline-workers-option", ["data", "run", "{tmp}/good.yaml", "--workers", "-1"], "'--workers'"),
    ("pipeline-output-under-a-file", ["data", "run", "{tmp}/good.yaml", "-o", "{tmp}/llama/config.json/out"], "Not a directory"),
    ("pipeline-source-not-mapping", ["data", "run", "{tmp}/source.yaml"], "source: must be a mapping"),
    ("forward-too-long", ["info", "tnl-tiny", "--forward", "--seq-len", "1000000000"], "a forward pass of tnl-tiny over 1000000000 tokens: "),
    ("report-missing", ["data", "report", "{tmp}/empty"], "does not exist: run `tnlm data run`"),
    ("pack-no-inputs", ["data", "pack", "{tmp}/nothing/*.jsonl", "--tokenizer", "{tmp}/tok", "--output", "{tmp}/p"], "no input files match"),
    ("pack-tokenizer-missing", ["data", "pack", "{tmp}/docs.jsonl", "--tokenizer", "{tmp}/no-tok", "--output", "{tmp}/p"], "no tokenizer at"),
    ("pack-tokenizer-truncated", ["data", "pack", "{tmp}/docs.jsonl", "--tokenizer", "{tmp}/badtok", "--output", "{tmp}/p"], "cannot be read"),
    ("pack-val-fraction", ["data", "pack", "{tmp}/docs.jsonl", "--tokenizer", "{tmp}/tok", "--output", "{tmp}/p", "--val-fraction", "2"], "'--val-fraction'"),
    ("tokenizer-no-inputs", ["tokenizer", "train", "{tmp}/nothing.txt", "--output", "{tmp}/t"], "nothing.txt' does not exist"),
    ("convert-missing", ["convert", "{tmp}/no-such", "{tmp}/converted"], "does not exist"),
    ("convert-transnormer", ["convert", "{tmp}/model", "{tmp}/converted"], "holds a 'transnormer' model"),
    # serving (port 0: any free port, so the cases that get past listening never collide)
    ("serve-port-range", ["serve", "tnl-tiny", "--port", "70000"], "'--port'"),
    ("serve-host-not-here", ["serve", "tnl-tiny", "--host", "192.0.2.1", "--port", "0"], "cannot listen on 192.0.2.1:0"),
    ("serve-unknown-preset", ["serve", "tnl-nope", "--port", "0"], "neither a preset nor a model directory"),
    ("serve-model-without-tokenizer", ["serve", "{tmp}/model", "--port", "0"], "has no tokenizer"),
    ("serve-max-batch-zero", ["serve", "tnl-tiny", "--port", "0", "--max-batch", "0"], "max-batch must be > 0"),
    ("serve-dtype-float16", ["serve", "tnl-tiny", "--port", "0", "--dtype", "float16"], "dtype 'float16' is not supported"),
    ("serve-device-banana", ["serve", "tnl-tiny", "--port", "0", "--device", "banana"], "device 'banana' is not a device name"),
    ("serve-empty-api-key", ["serve", "tnl-tiny", "--port", "0", "--api-key", " "], "the API key is empty"),
    ("tokenizer-vocab-tiny", ["tokenizer", "train", "{tmp}/docs.jsonl", "--output", "{tmp}/t", "--vocab-size", "10"], "vocab_size must exceed"),
]  # fmt: skip


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    from tnlm.models.registry import create_model

    root = tmp_path_factory.mktemp("misuse")
    (root / "empty").mkdir()
    (root / "badjson").mkdir()
    (root / "badjson" / "config.json").write_text('{"model_type": "transnormer",')
    (root / "llama").mkdir()
    (root / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    create_model("tnl-tiny", seed=0).save_pretrained(root / "model")  # no tokenizer
    for name in ("tok", "badtok"):
        ByteTokenizer().save_pretrained(root / name)
    data = (root / "badtok" / "tokenizer.json").read_bytes()
    (root / "badtok" / "tokenizer.json").write_bytes(data[: len(data) // 2])
    (root / "docs.jsonl").write_text(json.dumps({"text": "The farmer walked to the river."}) + "\n")
    pipeline = {"source": {"type": "files", "paths": [str(root / "docs.jsonl")]}, "output": str(root / "out"),
                "steps": GOOD_STEPS}
    (root / "good.yaml").write_text(yaml.safe_dump(pipeline))
    (root / "bad.yaml").write_text("source: [unclosed\n  steps: -")
    (root / "list.yaml").write_text("- step: normalize\n")
    (root / "workers.yaml").write_text(yaml.safe_dump({**pipeline, "workers": -2}))
    (root / "source.yaml").write_text(yaml.safe_dump({**pipeline, "source": "files"}))
    (root / "step.yaml").write_text(yaml.safe_dump({**pipeline, "steps": [{"step": "sparkle"}]}))
    return root


@pytest.mark.parametrize(("args", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_is_one_line_error_and_exit_2(args: list[str], expected: str, tmp, capsys) -> None:
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    status = main([a.replace("{tmp}", str(tmp)) for a in args])
    out, err = capsys.readouterr()
    assert status == 2, err
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert expected in err, err
    assert "Traceback" not in err and out == ""


def test_the_contract_covers_fifty_cases() -> None:
    assert len(CASES) >= 50 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("err", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "out/shard.jsonl"), "free some disk space"),
        (PermissionError(errno.EACCES, "Permission denied", "/data/out"), "check its permissions"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro"), "read-only"),
        (OSError(errno.EIO, "Input/output error"), "Input/output error"),
    ],
)
def test_os_errors_become_one_line_advice(err: OSError, expected: str) -> None:
    message = _os_error_message(err)
    assert expected in message and "\n" not in message


def test_running_out_of_memory_is_one_line(capsys, monkeypatch) -> None:
    def allocate(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 51200000000 bytes.")

    monkeypatch.setattr("tnlm.cli.info._forward_pass", allocate)
    assert main(["info", "tnl-tiny", "--forward"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory (") and err.count("\n") == 1 and "smaller model" in err


def test_a_bug_still_shows_its_traceback(monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("an internal error")

    monkeypatch.setattr("tnlm.cli.info._forward_pass", broken)
    with pytest.raises(RuntimeError, match="an internal error"):
        main(["info", "tnl-tiny", "--forward"])


def test_the_command_shows_a_user_warning_as_one_line(monkeypatch) -> None:
    import warnings

    from tnlm.cli import one_line_warnings

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    one_line_warnings()
    shown = warnings.formatwarning("could not keep the compiled step", UserWarning, "/x/_contextlib.py", 124)
    assert shown == "warning: could not keep the compiled step\n"
    other = warnings.formatwarning("old API", DeprecationWarning, "/x/lib.py", 7)
    assert "/x/lib.py:7" in other and "DeprecationWarning" in other
