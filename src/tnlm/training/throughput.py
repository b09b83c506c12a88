"""Training speed of a model at a given sequence length: the trainer's own step on one fixed batch.

    trainer = throughput_trainer(model, batch=4, seq_len=1024, device=torch.device("cpu"))
    seconds = [time_train_step(trainer) for _ in range(3)]

A step is `Trainer.train_step`: forward, float32 cross-entropy, backward, clipping, AdamW. The batch is
the same random one every step, so the loader's cost is not what is measured. `benchmarks/train_throughput.py`
and `tnlm compare` both measure with these functions.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch import nn

from tnlm.training.config import OptimizerSection
from tnlm.training.optim import build_optimizer
from tnlm.training.trainer import Batch, Trainer

FIRST_ID = 3  # random ids start above pad, bos and eos


class FixedBatches:
    """The same random batch of `batch` sequences of `seq_len` tokens, every step."""

    def __init__(self, batch: int, seq_len: int, vocab: int, *, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(FIRST_ID, vocab, (batch, seq_len + 1), generator=g)
        self.batch = {"input_ids": ids[:, :-1].contiguous(), "labels": ids[:, 1:].contiguous()}

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield self.batch

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def batches_per_epoch(self) -> int:
        return 1


def throughput_trainer(model: nn.Module, *, batch: int, seq_len: int, device: torch.device,
                       precision: str = "float32", lr: float = 1e-4) -> Trainer:  # fmt: skip
    """A Trainer of `model` (moved to `device`, in training mode) on a fixed random batch, constant lr."""
    model = model.to(device).train()
    optimizer = build_optimizer(model, OptimizerSection(lr=lr), device=device)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    return Trainer(model=model, optimizer=optimizer, schedule=schedule, val_loader=None, device=device,
                   train_loader=FixedBatches(batch, seq_len, int(model.config.vocab_size)), precision=precision,
                   grad_accum=1, grad_clip=1.0)  # fmt: skip


def time_train_step(trainer: Trainer) -> float:
    """Seconds of one training step (CUDA work included: the device is synchronised around it)."""
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start
