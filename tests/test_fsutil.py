"""Outputs respect the user's umask (tempfile alone would leave them 0600 / 0700)."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from tnlm.data.files import write_json_atomic, write_text_atomic
from tnlm.fsutil import current_umask, follow_umask, remove_unfinished


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(previous)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_open_would_give(tmp_path, umask, mask: int, expected: int) -> None:
    umask(mask)
    assert current_umask() == mask
    write_json_atomic(tmp_path / "a" / "report.json", {"x": 1})
    write_text_atomic(tmp_path / "b.txt", "hi")
    assert mode(tmp_path / "a" / "report.json") == expected and mode(tmp_path / "b.txt") == expected


def test_a_temporary_folder_renamed_into_place_follows_the_umask(tmp_path, umask) -> None:
    umask(0o022)
    folder = tempfile.mkdtemp(dir=tmp_path)
    assert mode(folder) == 0o700
    follow_umask(folder, directory=True)
    assert mode(folder) == 0o755


def test_config_paths_expand_the_home_folder(tmp_path, monkeypatch):
    from tnlm.fsutil import expand_home
    from tnlm.training.config import load_train_config

    monkeypatch.setenv("HOME", str(tmp_path))
    assert expand_home({"a": ["~/x", "y~"], "b": "~", "c": 3}) == {"a": [f"{tmp_path}/x", "y~"], "b": str(tmp_path), "c": 3}
    cfg = load_train_config(None, ["output=~/runs/a", "data.path=~/packed"])
    assert (cfg.output, cfg.data.path) == (f"{tmp_path}/runs/a", f"{tmp_path}/packed")


def test_remove_unfinished_deletes_only_the_leftovers_of_that_file(tmp_path):
    mine = [tmp_path / ".state.json.ab12.tmp", tmp_path / ".state.json.cd34.tmp.gz"]
    others = [tmp_path / ".other.json.ab12.tmp", tmp_path / "state.json.tmp", tmp_path / ".state.json"]
    for path in mine + others:
        path.write_text("x")
    remove_unfinished(tmp_path / "state.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in others)
    remove_unfinished(tmp_path / "missing" / "state.json")  # no folder: nothing to do
