"""Running a batch of token sequences through any tnlm family (or Hugging Face causal LM): padding,
the cache keyword, and keeping only the logits that are needed."""

from __future__ import annotations

import inspect

import torch
from torch import nn


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def model_forward(
    model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, *, cache: object = None, keep: int = 0, use_cache: bool = False
) -> tuple[torch.Tensor, object]:
    """(logits of the last `keep` positions, all when 0; the cache the model returns)."""
    kwargs: dict = {"attention_mask": mask, "use_cache": use_cache}
    if cache is not None:
        kwargs["cache" if _accepts(model, "cache") else "past_key_values"] = cache
    if keep and _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    out = model(input_ids=ids, **kwargs)
    logits = out.logits if not keep or out.logits.shape[1] == keep else out.logits[:, -keep:]
    new_cache = getattr(out, "cache", None)
    if new_cache is None and use_cache:  # a model outside tnlm may still return the old name
        new_cache = getattr(out, "past_key_values", None)  # (asked only then: transformers warns on every read)
    return logits, new_cache


def pad_batch(seqs: list[list[int]], *, left: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(ids, mask) of shape (B, max len); mask is None when no sequence is padded."""
    T = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), T, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.long)
    for b, s in enumerate(seqs):
        cols = slice(T - len(s), T) if left else slice(0, len(s))
        ids[b, cols] = torch.tensor(s, dtype=torch.long)
        mask[b, cols] = 1
    return ids.to(device), (None if bool(mask.all()) else mask.to(device))
