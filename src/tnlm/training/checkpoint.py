"""Checkpoints of a run: the one place that writes and reads training state.

A checkpoint is a folder `checkpoints/step-000120/` holding `state.pt` (a dict of state dicts: model,
optimizer, schedule, loader, RNG, counters) and `meta.json` (step, time, what the state belongs to). It is
written into a hidden temporary folder and renamed into place when complete, so a crash, a kill or a full
disk leaves either the whole checkpoint or none, and the previous ones stay intact. Only the newest `keep`
are kept. Loading uses `weights_only=True`: a checkpoint can hold tensors, numbers, strings, lists and
dicts, never code. (The distributed trainer swaps the two file operations for torch.distributed.checkpoint.)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tnlm.errors import CheckpointError

STEP_DIR = re.compile(r"^step-(\d+)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja")  # fmt: skip


class CheckpointManager:
    def __init__(self, folder: str | Path, *, keep: int) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        found = (STEP_DIR.match(p.name) for p in self.folder.iterdir() if (p / "meta.json").is_file())
        return sorted(int(m.group(1)) for m in found if m)

    def latest(self) -> int | None:
        steps = self.steps()
        return steps[-1] if steps else None

    def path(self, step: int) -> Path:
        return self.folder / f"step-{step:06d}"

    def save(self, step: int, state: dict[str, Any], *, meta: dict[str, Any]) -> Path:
        """Write a checkpoint atomically, then drop the oldest beyond `keep`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.path(step)
        tmp = Path(tempfile.mkdtemp(dir=self.folder, prefix=f".step-{step:06d}."))
        try:
            _write_state(tmp, state, meta={**meta, "step": step, "time": time.time()})
            if final.exists():  # the same step saved again: move the old copy aside (pruned below)
                os.replace(final, self.folder / f".{final.name}.old")
            os.replace(tmp, final)
        except (OSError, RuntimeError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = "no earlier checkpoint exists"
            if previous is not None:
                kept = f"the previous checkpoint {self.path(previous)} is intact"
            raise CheckpointError(
                f"could not write the checkpoint of step {step} ({_reason(e)}); {kept}. "
                "Free disk space (or lower checkpoint.keep), then resume with --resume"
            ) from None
        _fsync_dir(self.folder)
        self._prune()
        return final

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for leftover in self.folder.glob(".step-*"):  # temporary folders of writes that were killed
            shutil.rmtree(leftover, ignore_errors=True)

    def load(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, meta) of a checkpoint."""
        path = self.path(step)
        try:
            meta = json.loads((path / "meta.json").read_text())
            state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        except (OSError, json.JSONDecodeError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {path} cannot be read ({e}); delete it to resume from an older one"
            ) from None
        return state, meta


def export_model(model: torch.nn.Module, *, tokenizer: Path, out: Path) -> Path:
    """Save the model as a Hugging Face directory with the tokenizer files beside it, atomically
    (a reader sees the old directory or the new one, never half of one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        with _quiet_transformers():
            model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file():
                shutil.copy2(tokenizer / name, tmp / name)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not write the model to {out} ({_reason(e)}); the last checkpoint "
                              "is intact: free disk space and rerun with --resume") from None
    return out


@contextlib.contextmanager
def _quiet_transformers():
    """No progress bar from save_pretrained under the run's own."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _reason(e: Exception) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    # torch's zip writer reports a refused write as an internal RuntimeError
    return f"the disk is full or refused the write: {str(e).splitlines()[0]}"


def _write_state(folder: Path, state: dict[str, Any], *, meta: dict[str, Any]) -> None:
    with open(folder / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    with open(folder / "meta.json", "w") as f:  # last: its presence marks the checkpoint complete
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
