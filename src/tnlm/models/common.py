"""Pieces every causal-LM family shares: the loss, position ids from a padding mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast

from tnlm.models.cache import LayerCache


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy: logits (B, T, V) predict labels shifted by one; float32."""
    shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
    return F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, *, seq_len: int) -> torch.Tensor:
    """(1, T) positions of documents packed in one row: each restarts at 0 at its offset."""
    t = torch.arange(seq_len, device=cu_seqlens.device)
    doc = torch.searchsorted(cu_seqlens[1:].long(), t, right=True).clamp(max=cu_seqlens.numel() - 2)
    return (t - cu_seqlens.long()[doc]).unsqueeze(0)


def positions_from_mask(
    attention_mask: torch.Tensor | None, *, seq_len: int, past_len: int, device: torch.device
) -> torch.Tensor:
    """Absolute position of each new token in its own sequence, (B, T) or (1, T).

    attention_mask (B, past + T), 1 = real token, may be left-padded: a sequence's first real
    token gets position 0 whatever the padding before it.
    """
    if attention_mask is None:
        return (torch.arange(seq_len, device=device) + past_len).unsqueeze(0)
    pos = attention_mask.long().cumsum(-1) - 1
    return pos[:, -seq_len:].clamp(min=0).to(device)


def param_groups(
    model: torch.nn.Module, *, lr: float, weight_decay: float, lr_multipliers: dict[str, float] | None = None
) -> list[dict]:
    """Optimizer parameter groups: matrices (>= 2-D) decay, vectors (norm weights, biases) do not;
    a parameter whose name ends with a key of `lr_multipliers` gets lr * multiplier and no decay.
    Empty groups are left out; each group carries a "name" for logging."""
    multipliers = lr_multipliers or {}
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():  # tied weights appear once
        if not p.requires_grad:
            continue
        suffix = next((s for s in multipliers if name.endswith(s)), None)
        if suffix is not None:
            key, group_lr, wd = suffix, lr * multipliers[suffix], 0.0
        else:
            key, group_lr, wd = ("decay", lr, weight_decay) if p.dim() >= 2 else ("no_decay", lr, 0.0)
        groups.setdefault(key, {"name": key, "params": [], "lr": group_lr, "weight_decay": wd})["params"].append(p)
    return list(groups.values())


def decoder_output(
    x: torch.Tensor,
    *,
    final_norm: nn.Module,
    cache: LayerCache | None,
    use_cache: bool,
    hidden_states: list[torch.Tensor] | None,
) -> BaseModelOutputWithPast:
    """The end of every family's decoder forward: count the new tokens in the cache, apply the final
    norm, and package the output (the cache only when asked for)."""
    if cache is not None:
        cache.seen_tokens += x.shape[1]
    x = final_norm(x)
    if hidden_states is not None:
        hidden_states.append(x)
    return BaseModelOutputWithPast(
        last_hidden_state=x,
        cache=cache if use_cache else None,
        hidden_states=tuple(hidden_states) if hidden_states is not None else None,
    )
