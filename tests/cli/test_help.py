"""Help as a user reads it: -h everywhere, arguments written MODEL (not {model}), no type shown for a
flag (no <bool>), and nothing promised that is not there."""

from __future__ import annotations

import pytest
import typer

from tnlm.cli.main import app, main


def command_paths(command=None, path=()) -> list[tuple[str, ...]]:
    command = command or typer.main.get_command(app)
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():
        paths += command_paths(sub, (*path, name))
    return paths


PATHS = command_paths()


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "tnlm" for p in PATHS])
def test_help_is_conventional(path: tuple[str, ...], capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    assert main([*path, "-h"]) == 0
    text = capsys.readouterr().out
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<bool>" not in text, text
    assert usage.split("Usage: ")[1].startswith(" ".join(("tnlm", *path)))
    assert "inspect" not in text and "cluster" not in text


def test_every_command_is_listed_with_help() -> None:
    assert {p[0] for p in PATHS if p} >= {"info", "presets", "generate", "chat", "convert", "data", "tokenizer"}


def test_arguments_are_upper_case_in_usage(capsys) -> None:
    main(["generate", "-h"])
    assert "tnlm generate [OPTIONS] MODEL [PROMPT]" in capsys.readouterr().out
    main(["data", "pack", "-h"])
    assert "tnlm data pack [OPTIONS] INPUTS..." in capsys.readouterr().out
