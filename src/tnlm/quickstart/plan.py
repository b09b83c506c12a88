"""What a quickstart does and where: its options, how its time budget is shared out, its folder, and the
state file that records each finished stage (so a rerun continues, and a finished one only points at its
report).

    OUTPUT/quickstart.json   the options, the budget, and each finished stage's numbers and wall time
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tnlm.data.files import write_json_atomic
from tnlm.fsutil import remove_unfinished
from tnlm.errors import ConfigError, DataError

STATE = "quickstart.json"
STAGES = ("data", "tokenizer", "pack", "compare", "finetune", "chat", "summary")
TRAIN_SHARE = 0.45  # of the budget: pretraining both models (the comparison's budget.seconds)
FINETUNE_SHARE = 0.10  # of the budget: the LoRA fine-tuning
LONG_SPEED = (256, 1024, 4096)  # speed measured at these lengths when the budget allows (>= 5 minutes)
SHORT_SPEED = (256, 1024)
Log = Callable[[str], None]


@dataclass(frozen=True)
class Scale:
    """The sizes of a quickstart; the defaults are tnl-tiny's, tests shrink them."""

    tnl: dict[str, Any] = field(default_factory=dict)  # model config overrides of the TransNormer (tnl-tiny)
    # the Transformer's position limit (RoPE, no scaling: nothing else changes) above the longest decoding
    # context plus the decoded tokens, so that its speed is measured there too
    transformer: dict[str, Any] = field(default_factory=lambda: {"max_position_embeddings": 8192})
    vocab_size: int = 8192
    seq_len: int = 256
    batch_size: int = 8
    speed_lengths: tuple[int, ...] | None = None  # None: by the budget (LONG_SPEED or SHORT_SPEED)
    speed_tokens: int = 4096  # tokens per timed training step at every length (one sequence at 4096)
    decode_tokens: int = 16
    chat_seq_len: int = 256
    max_new_tokens: int = 48


@dataclass(frozen=True)
class Options:
    output: str = "quickstart"
    minutes: float = 10.0
    data: str | None = None  # text files, folders or globs (None: the built-in corpus)
    seed: int = 0
    scale: Scale = Scale()

    def check(self) -> None:
        if not (isinstance(self.minutes, (int, float)) and self.minutes > 0 and self.minutes < 10_000):
            raise ConfigError(f"--minutes must be a positive number of minutes (e.g. 10), got {self.minutes}")
        if self.data is not None:
            check_data(self.data)

    def settings(self) -> dict[str, Any]:
        """What makes two quickstarts the same run (a rerun with other settings is refused)."""
        data = None if self.data is None else str(Path(self.data).resolve())
        return json.loads(json.dumps({"minutes": self.minutes, "data": data, "seed": self.seed,
                                      "scale": asdict(self.scale)}))  # fmt: skip


def check_data(path: str) -> None:
    """--data: files, folders or globs that name at least one readable, non-empty file."""
    from tnlm.data.sources import FileSource

    if Path(path).is_dir() and not any(f.is_file() for f in Path(path).rglob("*")):
        raise DataError(f"--data {path} is an empty folder: put .txt or .jsonl files in it, or leave --data out "
                        "to use the built-in corpus")  # fmt: skip
    files = FileSource(paths=[path]).paths
    if all(Path(f).stat().st_size == 0 for f in files):
        raise DataError(f"--data {path}: every file it names is empty")


@dataclass(frozen=True)
class Budget:
    """The budget in seconds, shared out among the stages that can be sized."""

    total_s: float
    train_s: float  # both models' pretraining together
    finetune_s: float
    speed_lengths: tuple[int, ...]

    @classmethod
    def of(cls, options: Options) -> Budget:
        total = options.minutes * 60
        lengths = options.scale.speed_lengths or (LONG_SPEED if options.minutes >= 5 else SHORT_SPEED)
        return cls(total_s=total, train_s=total * TRAIN_SHARE, finetune_s=total * FINETUNE_SHARE,
                   speed_lengths=tuple(lengths))  # fmt: skip


class State:
    """quickstart.json: the options, then each finished stage's record (written atomically)."""

    def __init__(self, out: Path, settings: dict[str, Any]) -> None:
        self.out, self.path = out, out / STATE
        self.data: dict[str, Any] = {"settings": settings, "stages": {}}
        self.started = time.perf_counter()

    @classmethod
    def claim(cls, out: Path, settings: dict[str, Any]) -> State:
        """The state of this folder: a new quickstart (the folder empty or absent) or the same one again.
        A folder holding anything else, or a quickstart with other settings, is refused untouched."""
        state = cls(out, settings)
        if state.path.is_file():
            saved = json.loads(state.path.read_text(encoding="utf-8"))
            if saved.get("settings") != settings:
                changed = [k for k in settings if saved.get("settings", {}).get(k) != settings[k]]
                raise ConfigError(f"{out} holds a quickstart with other settings ({', '.join(changed)} differ): "
                                  "rerun it with its own options to continue it, or give --output NEW_DIR")  # fmt: skip
            state.data = saved
            return state
        remove_unfinished(state.path)  # a quickstart killed while writing its first state leaves only that
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise ConfigError(f"{out} is not empty and holds no quickstart: give a new or empty folder with "
                              "--output DIR (nothing in it was touched)")  # fmt: skip
        out.mkdir(parents=True, exist_ok=True)
        state.save()
        return state

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def done(self, stage: str) -> dict[str, Any] | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, record: dict[str, Any], *, wall_s: float) -> None:
        self.data["stages"][stage] = {**record, "wall_s": round(wall_s, 2)}
        self.save()

    @property
    def finished(self) -> bool:
        return all(s in self.data["stages"] for s in STAGES)

    def spent_s(self) -> float:
        """Wall seconds of the finished stages, from every run of this quickstart."""
        return sum(s["wall_s"] for s in self.data["stages"].values())


def clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"
