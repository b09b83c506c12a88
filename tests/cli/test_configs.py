"""The shipped pipeline configs run on a user's machine: they read the built-in corpus or paths the
user provides (inside the project, or given with --input), never a folder beside the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO
from tnlm.cli.main import main
from tnlm.data.pipeline import PipelineConfig
from tnlm.data.registry import STEPS

CONFIGS = sorted((REPO / "configs" / "data").glob("*.yaml"))


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_reads_nothing_outside_the_project(path: Path) -> None:
    cfg = PipelineConfig.from_yaml(path)
    assert all(entry["step"] in STEPS for entry in cfg.steps)
    for text in strings({"source": cfg.source, "steps": cfg.steps, "output": cfg.output}):
        assert "shared/data" not in text and not text.startswith(("..", "/", "~")), (path.name, text)


@pytest.mark.parametrize(
    ("config", "inputs", "documents"),
    [("tinystories", ["tinystories/tinystories_sample.complete.txt"], 2000), ("chinese", ["chinese/lunyu.json"], 10)],
)
def test_shipped_config_runs_on_a_file_the_user_passes(config, inputs, documents, shared_data, tmp_path, capsys) -> None:
    args = ["data", "run", str(REPO / "configs" / "data" / f"{config}.yaml"), "-q", "-o", str(tmp_path / "out")]
    for name in inputs:
        args += ["--input", str(shared_data / name)]
    assert main(args) == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["docs_out"] >= documents
