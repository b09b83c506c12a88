"""A loader over packed token shards for training.

Two layouts: "windows" gives fixed-length windows `input_ids`/`labels` of shape (B, T) that cross
document boundaries (the usual pretraining layout); "varlen" packs whole documents (split when longer
than `seq_len`) into one row of up to B*T tokens with `cu_seqlens` marking where each document starts,
so attention need not cross documents. Batches are spread round-robin over data-parallel ranks, the
order is reshuffled each epoch from `seed`, and `state_dict()` records the epoch and the next batch,
so a resumed run continues at exactly the next token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tnlm.errors import DataError
from tnlm.data.pack import read_split


@dataclass(frozen=True)
class LoaderConfig:
    seq_len: int
    batch_size: int
    mode: str = "windows"
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    shuffle: bool = True


class TokenLoader:
    """Iterate batches forever (epoch after epoch); `state_dict`/`load_state_dict` resume exactly."""

    def __init__(self, folder: str | Path, *, seq_len: int, batch_size: int, split: str = "train",
                 mode: str = "windows", rank: int = 0, world_size: int = 1, seed: int = 0, shuffle: bool = True) -> None:
        if mode not in ("windows", "varlen"):
            raise DataError(f"mode must be windows or varlen, not {mode!r}")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        self.config = LoaderConfig(seq_len, batch_size, mode, rank, world_size, seed, shuffle)
        self.shards = list(read_split(folder, split))
        # units: (shard, start, length) of each window (length seq_len + 1) or document piece
        units = self._windows() if mode == "windows" else self._pieces()
        self.units = np.array(units, dtype=np.int64).reshape(-1, 3)
        self.epoch, self.batch = 0, 0
        if self.batches_per_epoch() == 0:
            raise DataError(f"the {split} split is too small for one batch per rank: "
                            f"lower seq_len/batch_size or pack more data")

    def _windows(self) -> list[tuple[int, int, int]]:
        span = self.config.seq_len + 1
        return [(s, start, span) for s, (tokens, _) in enumerate(self.shards)
                for start in range(0, len(tokens) - span + 1, self.config.seq_len)]

    def _pieces(self) -> list[tuple[int, int, int]]:
        span, out = self.config.seq_len + 1, []
        for s, (_, ends) in enumerate(self.shards):
            starts = np.concatenate([[0], ends[:-1]])
            for start, end in zip(starts.tolist(), ends.tolist()):
                out += [(s, p, min(span, end - p)) for p in range(start, end - 1, span - 1)]
        return [u for u in out if u[2] >= 2]

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for an epoch, each an array of unit indices."""
        order = np.arange(len(self.units))
        if self.config.shuffle:
            order = np.random.default_rng([self.config.seed, epoch]).permutation(len(self.units))
        if self.config.mode == "windows":
            n = len(order) // self.config.batch_size
            batches = np.split(order[: n * self.config.batch_size], n) if n else []
        else:
            batches = self._pack(order)
        per_rank = len(batches) // self.config.world_size
        return batches[self.config.rank : per_rank * self.config.world_size : self.config.world_size]

    def _pack(self, order: np.ndarray) -> list[np.ndarray]:
        budget = self.config.batch_size * self.config.seq_len
        batches, current, used = [], [], 0
        for i, n_inputs in zip(order.tolist(), (self.units[order, 2] - 1).tolist()):
            if used + n_inputs > budget and current:
                batches.append(np.array(current))
                current, used = [], 0
            current.append(i)
            used += n_inputs
        return batches  # the last, partial batch is dropped so every batch is full-ish

    def batches_per_epoch(self) -> int:
        return len(self._plan(0))

    def _collate(self, units: np.ndarray) -> dict[str, torch.Tensor]:
        rows = [np.asarray(self.shards[s][0][start : start + n], dtype=np.int64) for s, start, n in self.units[units]]
        if self.config.mode == "windows":
            block = torch.from_numpy(np.stack(rows))  # (B, T + 1)
            return {"input_ids": block[:, :-1], "labels": block[:, 1:]}
        lengths = [len(r) - 1 for r in rows]
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return {
            "input_ids": torch.from_numpy(np.concatenate([r[:-1] for r in rows]))[None],  # (1, N)
            "labels": torch.from_numpy(np.concatenate([r[1:] for r in rows]))[None],
            "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in lengths]))[None],
            "cu_seqlens": torch.from_numpy(cu),
            "max_seqlen": int(max(lengths)),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            plan = self._plan(self.epoch)
            while self.batch < len(plan):
                units = plan[self.batch]
                self.batch += 1
                yield self._collate(units)
            self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != asdict(self.config):
            raise DataError(f"loader state was saved with {state['config']}, not {asdict(self.config)}: "
                            "resume with the same seq_len, batch_size, mode, rank, world_size and seed")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
