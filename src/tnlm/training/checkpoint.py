"""Checkpoints of a run: the one place that writes and reads training state.

A checkpoint is a folder `checkpoints/step-000120/` written by torch.distributed.checkpoint (DCP): one
`__R_0.distcp` file per process with its shards of every tensor, `.metadata` (which shard of which
tensor lies where), plus `meta.json` (step, time, model type and config, what the state belongs to).
Any number of processes in any layout can load it: each reads the pieces of the shards it holds now
(2-way FSDP -> 1 process -> 2-way tensor parallel). The state is a dict of state dicts (model,
optimizer, schedule, loader, RNG, counters; see Trainer.state_dict). Non-tensor values are read back
with `weights_only=True`: a checkpoint holds tensors, numbers, strings, lists and dicts, never code.

It is written into a hidden temporary folder and renamed into place by the first process once every
process has written its part, so a crash, a kill or a full disk leaves either the whole checkpoint or
none, and the previous ones stay intact. Only the newest `keep` are kept. In a distributed run every
process calls save and load_into (they are collective); the file operations are the first process's.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException

from tnlm.errors import CheckpointError
from tnlm.models.checkpoint import quiet_transformers

STEP_DIR = re.compile(r"^step-(\d+)$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "chat_template.jinja")  # fmt: skip


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _is_main() -> bool:
    return not _distributed() or dist.get_rank() == 0


def _barrier() -> None:
    if _distributed():
        dist.barrier()


@contextlib.contextmanager
def _quiet_dcp():
    """Without DCP's warning that no process group means one process: here that is the intent."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to", category=UserWarning)
        yield


def _any_failed(error: BaseException | None) -> bool:
    """Whether any process failed (every process learns it, so none waits for the others in vain)."""
    if not _distributed():
        return error is not None
    flags: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(flags, error is not None)
    return any(flags)


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
        """Write a checkpoint atomically, then drop the oldest beyond `keep` (collective)."""
        final, tmp = self.path(step), self.folder / f".step-{step:06d}.tmp"
        if _is_main():
            self.folder.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)  # left by a write that was killed
            tmp.mkdir()
        _barrier()
        error = None
        try:
            with _quiet_dcp():
                dcp.save(state, checkpoint_id=tmp, no_dist=not _distributed())
            if _is_main():
                _write_json(tmp / "meta.json", {**meta, "step": step, "time": time.time()})
                if final.exists():  # the same step saved again: move the old copy aside (pruned below)
                    os.replace(final, self.folder / f".{final.name}.old")
                os.replace(tmp, final)
                _fsync_dir(self.folder)
        except (OSError, RuntimeError, CheckpointException) as e:
            error = e
        if _any_failed(error):
            if _is_main():
                shutil.rmtree(tmp, ignore_errors=True)
            previous = self.latest()
            kept = "no earlier checkpoint exists"
            if previous is not None:
                kept = f"the previous checkpoint {self.path(previous)} is intact"
            raise CheckpointError(
                f"could not write the checkpoint of step {step} ({_reason(error) if error else 'another process failed'}); "
                f"{kept}. "
                "Free disk space (or lower checkpoint.keep), then resume with --resume"
            ) from None
        _barrier()
        if _is_main():
            self._prune()
        return final

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            shutil.rmtree(self.path(step), ignore_errors=True)
        for leftover in self.folder.glob(".step-*"):  # temporary folders of writes that were killed
            shutil.rmtree(leftover, ignore_errors=True)

    def meta(self, step: int) -> dict[str, Any]:
        path = self.path(step)
        try:
            return json.loads((path / "meta.json").read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {path} cannot be read ({e}); delete it to resume from an older one") from None

    def load_into(self, step: int, state: dict[str, Any]) -> None:
        """Fill `state` (the form Trainer.state_dict gives: the tensors this process holds) from the
        checkpoint, in place; every process of a distributed run calls this together."""
        path = self.path(step)
        try:
            with _quiet_dcp():
                dcp.load(state, checkpoint_id=path, no_dist=not _distributed())
        except (OSError, RuntimeError, ValueError, KeyError, CheckpointException) as e:
            raise CheckpointError(f"checkpoint {path} does not fit this run ({_short(e)}); it may come from another "
                                  "model: set output=NEW_DIR to start a new run, or delete it to resume from an "
                                  "older one") from None  # fmt: skip

    def load(self, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state, meta) of a checkpoint, every tensor whole, read in this one process (for inspection
        and tests; training restores with load_into)."""
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys

        meta, path = self.meta(step), self.path(step)
        try:
            with _quiet_dcp():
                state = _load_state_dict_from_keys(checkpoint_id=path)
        except (OSError, RuntimeError, CheckpointException) as e:
            raise CheckpointError(f"checkpoint {path} cannot be read ({_short(e)}); delete it to resume from an "
                                  "older one") from None  # fmt: skip
        return state, meta


def export_model(model: torch.nn.Module, *, tokenizer: Path, out: Path) -> Path:
    """Save the model as a Hugging Face directory with the tokenizer files beside it, atomically
    (a reader sees the old directory or the new one, never half of one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        with quiet_transformers():
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


def find_checkpoint(run: str | Path, *, step: int | None = None) -> Path:
    """The checkpoint folder `run` names: a checkpoint itself, or a run directory's newest (or `step`'s)."""
    run = Path(run)
    if (run / "meta.json").is_file() and step is None:
        return run
    manager = CheckpointManager(run / "checkpoints", keep=1)
    steps = manager.steps()
    if not steps:
        what = "does not exist" if not run.exists() else "holds no checkpoint (no checkpoints/step-N/meta.json)"
        raise CheckpointError(f"{run} {what}: give a run directory of `tnlm train` or one of its checkpoints")
    if step is not None and step not in steps:
        raise CheckpointError(f"{run} has no checkpoint of step {step}; it has steps {', '.join(map(str, steps))}")
    return manager.path(step if step is not None else steps[-1])


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, tokenizer: str | Path | None = None) -> Path:
    """The model of a checkpoint (saved by any number of processes in any layout) as a plain Hugging
    Face model directory, with the tokenizer files beside it; runs in this one process.
    `tokenizer`: the tokenizer folder (default: the one the run trained with, as meta.json records it)."""
    checkpoint, out = Path(checkpoint), Path(out)
    meta_file = checkpoint / "meta.json"
    if not meta_file.is_file():
        raise CheckpointError(f"{checkpoint} is not a checkpoint (no meta.json): give a run directory or one of "
                              "its checkpoints/step-N folders")  # fmt: skip
    meta = json.loads(meta_file.read_text())
    if "model_config" not in meta:
        raise CheckpointError(f"{checkpoint} does not record its model's config (written by an older tnlm); "
                              "resume the run once to write a new checkpoint, then export that")  # fmt: skip
    model = _empty_model(meta["model_config"])
    from tnlm.training.parallel.state import model_state

    try:
        with _quiet_dcp():
            dcp.load({"model": model_state(model)}, checkpoint_id=checkpoint, no_dist=True)
    except (OSError, RuntimeError, ValueError, KeyError, CheckpointException) as e:
        raise CheckpointError(f"{checkpoint} cannot be read into a {meta['model_config'].get('model_type')} model "
                              f"({_short(e)})") from None  # fmt: skip
    folder = Path(tokenizer) if tokenizer else Path(meta.get("tokenizer", ""))
    if not (folder / "tokenizer.json").is_file():
        raise CheckpointError(f"the run's tokenizer ({folder}) is not there any more: give its folder with "
                              "--tokenizer DIR")  # fmt: skip
    return export_model(model.eval(), tokenizer=folder, out=out)


def _empty_model(config: dict[str, Any]) -> torch.nn.Module:
    """A float32 model of this config on the CPU, its weights allocated but not initialised (every
    one is then read from the checkpoint)."""
    from tnlm.models.registry import FAMILIES

    config = dict(config)
    family = FAMILIES.get(config.pop("model_type", None))
    if family is None:
        raise CheckpointError(f"the checkpoint holds a model of an unknown type; tnlm knows {', '.join(FAMILIES)}")
    with torch.device("meta"):
        model = family.model_class(family.config_class.from_dict(config))
    model = model.to_empty(device="cpu").float()
    model.tie_weights()
    return model


def _failures(e: BaseException) -> list[BaseException]:
    """The exceptions behind a DCP CheckpointException (one per failed process), or e itself."""
    if isinstance(e, CheckpointException):
        found = [f[0] if isinstance(f, tuple) else f for f in e.failures.values()]  # (exception, traceback)
        return [f for f in found if isinstance(f, BaseException)] or [e]
    return [e]


def _short(e: BaseException) -> str:
    first = _failures(e)[0]
    text = str(first).strip().splitlines()
    return f"{type(first).__name__}: {text[0] if text else ''}"


def _reason(e: BaseException) -> str:
    first = _failures(e)[0]
    if isinstance(first, OSError) and first.strerror:
        return first.strerror
    return f"the disk is full or refused the write: {_short(first)}"


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """meta.json, written last: its presence marks the checkpoint complete."""
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
