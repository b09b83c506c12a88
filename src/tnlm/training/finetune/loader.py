"""Batches of chat samples for the trainer (a `BatchSource`): packed with cu_seqlens, or padded rows.

Packed: samples are laid end to end in one row of up to batch_size * seq_len positions, with
`cu_seqlens` marking where each starts and `position_ids` restarting at 0, so no sample attends to
another (the families whose `supports_packed_documents` is true). Padded: batch_size samples, one a
row, right-padded to the longest with the pad id and label -100; padding after the last real token
is never attended to by a causal model, so no attention mask is needed.

The order is reshuffled each epoch from the seed; batches go round-robin to data-parallel ranks;
`state_dict` records the epoch and the next batch, so a resumed run continues at the same sample.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from tnlm.errors import DataError
from tnlm.training.finetune.samples import Sample
from tnlm.training.trainer import IGNORE_INDEX


@dataclass(frozen=True)
class ChatLoaderConfig:
    seq_len: int
    batch_size: int
    packed: bool
    samples: int
    seed: int = 0
    shuffle: bool = True
    rank: int = 0
    world_size: int = 1


class ChatLoader:
    """Endless batches of `samples` (each at most seq_len positions)."""

    def __init__(self, samples: Sequence[Sample], *, seq_len: int, batch_size: int, packed: bool, pad_id: int,
                 seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        too_long = [i for i, s in enumerate(samples) if len(s.input_ids) > seq_len]
        if too_long:
            raise DataError(f"sample {too_long[0]} has {len(samples[too_long[0]].input_ids)} positions, more "
                            f"than seq_len={seq_len}")  # fmt: skip
        self.samples = list(samples)
        self.lengths = np.array([len(s.input_ids) for s in self.samples], dtype=np.int64)
        self.pad_id = pad_id
        self.config = ChatLoaderConfig(seq_len, batch_size, packed, len(self.samples), seed, shuffle, rank,
                                       world_size)  # fmt: skip
        self.epoch, self.batch = 0, 0
        if self.batches_per_epoch() == 0:
            raise DataError(f"{len(self.samples)} samples make no batch for each of {world_size} ranks: "
                            "give more dialogues or lower data.batch_size")  # fmt: skip

    def _plan(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of an epoch, each an array of sample indices."""
        n = len(self.samples)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(n) if self.config.shuffle else np.arange(n)
        if self.config.packed:
            batches = self._pack(order)
        else:
            size = self.config.batch_size
            batches = [order[i : i + size] for i in range(0, n, size)]
        per_rank = len(batches) // self.config.world_size
        return batches[self.config.rank : per_rank * self.config.world_size : self.config.world_size]

    def _pack(self, order: np.ndarray) -> list[np.ndarray]:
        budget = self.config.batch_size * self.config.seq_len
        batches, current, used = [], [], 0
        for i in order.tolist():
            if used + self.lengths[i] > budget and current:
                batches.append(np.array(current))
                current, used = [], 0
            current.append(i)
            used += int(self.lengths[i])
        if current:
            batches.append(np.array(current))
        return batches

    def batches_per_epoch(self) -> int:
        return len(self._plan(0))

    def collate(self, indices: Sequence[int]) -> dict[str, Any]:
        chosen = [self.samples[i] for i in indices]
        return collate_packed(chosen) if self.config.packed else collate_padded(chosen, pad_id=self.pad_id)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            plan = self._plan(self.epoch)
            while self.batch < len(plan):
                indices = plan[self.batch]
                self.batch += 1
                yield self.collate(indices)
            self.epoch, self.batch = self.epoch + 1, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["config"] != asdict(self.config):
            raise DataError(f"chat loader state was saved with {state['config']}, not {asdict(self.config)}: "
                            "resume with the same data, seq_len, batch_size, packing and seed")  # fmt: skip
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def collate_packed(samples: Sequence[Sample]) -> dict[str, Any]:
    """One row: input_ids, labels, position_ids (1, N); cu_seqlens (len + 1,) int32."""
    lengths = [len(s.input_ids) for s in samples]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return {
        "input_ids": torch.from_numpy(np.concatenate([s.input_ids for s in samples]))[None],
        "labels": torch.from_numpy(np.concatenate([s.labels for s in samples]))[None],
        "position_ids": torch.from_numpy(np.concatenate([np.arange(n) for n in lengths]))[None],
        "cu_seqlens": torch.from_numpy(cu),
        "max_seqlen": int(max(lengths)),
    }


def collate_padded(samples: Sequence[Sample], *, pad_id: int) -> dict[str, Any]:
    """input_ids, labels (B, longest): right-padded with pad_id and IGNORE_INDEX."""
    longest = max(len(s.input_ids) for s in samples)
    ids = np.full((len(samples), longest), pad_id, dtype=np.int64)
    labels = np.full((len(samples), longest), IGNORE_INDEX, dtype=np.int64)
    for row, s in enumerate(samples):
        ids[row, : len(s.input_ids)] = s.input_ids
        labels[row, : len(s.labels)] = s.labels
    return {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels)}
