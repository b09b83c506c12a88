"""AdamW over the model's own parameter groups, and the learning-rate schedule.

The schedule is a multiplier of each group's own learning rate (so Infini's gate keeps its ratio):
linear warmup from 0 to 1 over `warmup_steps`, then cosine or linear decay to `min_lr_ratio` at the last
step, or constant. Step s (0-based) trains with multiplier lr_factor(s).
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from tnlm.errors import ConfigError
from tnlm.training.config import OptimizerSection, ScheduleSection


def lr_factor(step: int, *, schedule: ScheduleSection, total_steps: int) -> float:
    """The multiplier of the base learning rate at optimizer step `step` (0-based)."""
    warmup = schedule.warmup_steps
    if step < warmup:
        return (step + 1) / warmup
    if schedule.decay == "constant":
        return 1.0
    span = max(total_steps - 1 - warmup, 1)
    progress = min((step - warmup) / span, 1.0)
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule.decay == "cosine" else 1.0 - progress
    return schedule.min_lr_ratio + (1.0 - schedule.min_lr_ratio) * shape


def build_optimizer(model: torch.nn.Module, cfg: OptimizerSection, *, device: torch.device) -> torch.optim.AdamW:
    """AdamW on the model's own `param_groups` (decay on weight matrices only; the family's special
    parameters at their own learning rates). Fused where the device supports it."""
    groups = model.param_groups(lr=cfg.lr, weight_decay=cfg.weight_decay)
    fused = _fused(cfg.fused, device)
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
    )


def _fused(setting: str, device: torch.device) -> bool | None:
    if setting == "false":
        return None
    supported = device.type in ("cuda", "cpu", "xpu", "mps")
    if setting == "true" and not supported:
        raise ConfigError(f"optimizer.fused=true: fused AdamW does not run on {device.type}; use optimizer.fused=auto")
    return True if supported else None


def build_schedule(optimizer: torch.optim.Optimizer, cfg: ScheduleSection, *, total_steps: int) -> LambdaLR:
    """A LambdaLR whose `step()` follows each optimizer step; state_dict/load_state_dict resume it."""
    return LambdaLR(optimizer, lambda s: lr_factor(s, schedule=cfg, total_steps=total_steps))
