"""The training step, the validation pass, and the state a checkpoint holds.

A batch is a dict: `input_ids` (B, T); `labels` (B, T), the target of each position, already aligned
(labels[b, t] is the token after input_ids[b, t]; -100 = no loss there, as an SFT mask sets it); and for
documents packed in one row (B = 1) `cu_seqlens` (N + 1,) and `position_ids` (1, T). A loss function
takes (model, batch) and returns the summed loss over the batch's target tokens; the step divides by
the number of targets of all its micro-batches together, so k micro-batches give the gradient of one
batch k times larger, whatever each one's share of masked tokens.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tnlm.errors import TnlmError

Batch = dict[str, Any]
LossFn = Callable[[nn.Module, Batch], torch.Tensor]


class BatchSource(Protocol):
    """What the trainer needs from a loader (TokenLoader is one; an SFT dataset of dialogues can be
    another): endless batches, a position that checkpoints save and restore exactly, and its size."""

    def __iter__(self) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def batches_per_epoch(self) -> int: ...


IGNORE_INDEX = -100
MODEL_INPUTS = ("input_ids", "cu_seqlens", "position_ids")


class TrainingError(TnlmError, RuntimeError):
    """Training cannot go on (a non-finite loss, data without targets)."""


def next_token_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy (float32) of the model's predictions against `labels`."""
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    logits = model(**inputs, use_cache=False).logits  # (B, T, V)
    return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")  # fmt: skip


def count_targets(batch: Batch) -> int:
    return int((batch["labels"] != IGNORE_INDEX).sum())


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Trainer:
    """One model, its optimizer and schedule, and where its batches come from."""

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: Any,
                 train_loader: BatchSource, val_loader: BatchSource | None, device: torch.device, precision: str, grad_accum: int, grad_clip: float,
                 loss_fn: LossFn = next_token_loss) -> None:  # fmt: skip
        self.model, self.optimizer, self.schedule = model, optimizer, schedule
        self.train_loader, self.val_loader = train_loader, val_loader
        self.device, self.precision = device, precision
        self.grad_accum, self.grad_clip, self.loss_fn = grad_accum, grad_clip, loss_fn
        self.step, self.tokens = 0, 0
        self._batches: Iterator[Batch] | None = None

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def next_micro_batches(self) -> list[Batch]:
        if self._batches is None:
            self._batches = iter(self.train_loader)
        return [self.local_share(next(self._batches)) for _ in range(self.grad_accum)]

    def local_share(self, batch: Batch) -> Batch:
        """The part of a loader's batch this process computes (one process: all of it)."""
        return batch

    def sum_over_processes(self, *values: float) -> tuple[float, ...]:
        """Totals over the processes that split the data (one process: the values themselves)."""
        return values

    def forward_backward(self, micro_batches: list[Batch]) -> float:
        """Accumulate the gradient of the mean loss over all target tokens of `micro_batches` (of every
        process that holds a share of the batch)."""
        (n_targets,) = self.sum_over_processes(sum(count_targets(b) for b in micro_batches))
        if n_targets == 0:
            raise TrainingError(f"step {self.step + 1} has no target tokens (every label is {IGNORE_INDEX})")
        total = torch.zeros((), device=self.device)
        for batch in micro_batches:
            with self._autocast():
                loss_sum = self.loss_fn(self.model, to_device(batch, self.device))
            (loss_sum / n_targets).backward()
            total += loss_sum.detach()
        (total_loss,) = self.sum_over_processes(total.item())
        return total_loss / n_targets

    def clip_gradients(self, max_norm: float) -> float:
        """Scale the gradients to a global norm of at most `max_norm`; returns the norm before."""
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()

    def optimizer_step(self) -> tuple[float, float]:
        """Clip, step the optimizer and the schedule; (gradient norm before clipping, lr used)."""
        max_norm = self.grad_clip if self.grad_clip > 0 else math.inf
        norm = self.clip_gradients(max_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm, lr

    def train_step(self) -> dict[str, float]:
        """One optimizer step over `grad_accum` micro-batches; the step's loss, grad norm, lr, tokens."""
        micro_batches = self.next_micro_batches()
        loss = self.forward_backward(micro_batches)
        if not math.isfinite(loss):
            raise TrainingError(
                f"the loss is {loss} at step {self.step + 1}: lower optimizer.lr or raise schedule.warmup_steps, "
                "then resume from the last checkpoint (--resume)"
            )
        norm, lr = self.optimizer_step()
        (tokens,) = self.sum_over_processes(sum(b["input_ids"].numel() for b in micro_batches))
        self.step += 1
        self.tokens += tokens
        return {"loss": loss, "grad_norm": norm, "lr": lr, "step_tokens": tokens}

    @torch.no_grad()
    def validate(self, *, batches: int) -> float:
        """Mean loss per target token over the first `batches` validation batches (always the same
        ones). Leaves every piece of training state as it was, RNG included."""
        loader = self.val_loader
        start = loader.state_dict()
        loader.load_state_dict({**start, "epoch": 0, "batch": 0})
        n = min(batches, loader.batches_per_epoch())
        total, count = 0.0, 0
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            for _, batch in zip(range(n), loader):
                batch = self.local_share(batch)
                with self._autocast():
                    total += self.loss_fn(self.model, to_device(batch, self.device)).item()
                count += count_targets(batch)
        self.model.train(was_training)
        loader.load_state_dict(start)
        total, count = self.sum_over_processes(total, count)
        return total / max(count, 1)

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds, in the form torch.distributed.checkpoint saves and any process
        layout reloads: model and optimizer keyed by parameter name, the loader's position in global batches."""
        from tnlm.training.parallel.state import model_state, optimizer_state, portable_loader_state

        return {
            "model": model_state(self.model),
            "optimizer": optimizer_state(self.model, self.optimizer),
            "schedule": self.schedule.state_dict(),
            "loader": portable_loader_state(self.train_loader.state_dict()),
            "rng": rng_state(),
            "progress": {"step": self.step, "tokens": self.tokens},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from tnlm.training.parallel.state import load_model_state, load_optimizer_state, local_loader_state

        load_model_state(self.model, state["model"])
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.train_loader.load_state_dict(local_loader_state(state["loader"], self.train_loader.state_dict()))
        self._batches = None
        set_rng_state(state["rng"])
        self.step, self.tokens = int(state["progress"]["step"]), int(state["progress"]["tokens"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and lists (loadable with weights_only=True)."""
    key, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"key": key, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss,
                  "cached": cached},  # fmt: skip
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["key"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
