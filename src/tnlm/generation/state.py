"""The decoding state of a batch, for any model family.

Every tnlm family keeps its decoding state in its own LayerCache (tnlm.models.decoder), returned by
forward(..., use_cache=True) as `.cache` and passed back as `cache=`:

- TransNormer: the float32 recurrent state (B, H, Dk, Dv) of every layer; its size is fixed, so a
  token costs the same at any position. Each sequence's LRPE position comes from its own attention
  mask (left padding does not count), and a new DecodeState starts every prompt at position 0.
- Transformer: the keys and values of every layer (grows with the context).
- Infini-attention: the compressive memory plus the current segment's keys and values.

DecodeState holds that object together with the attention mask (B, past + T) and feeds the model:
the prompt once (in chunks if asked), then one token per sequence per step.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from tnlm.errors import InputError


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


class DecodeState:
    """prefill(prompt ids, mask) -> last logits; step(tokens) -> next logits. One per generate() call."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cache: object | None = None
        self.mask: torch.Tensor | None = None  # (B, past + T); None while no sequence has padding
        self.tokens: list[list[int]] = []  # per sequence, every real token fed so far (no padding)
        self._cache_kw = "cache" if _accepts(model, "cache") else "past_key_values"
        self._keep_last = _accepts(model, "logits_to_keep")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        kwargs = {self._cache_kw: self.cache, "use_cache": True, "attention_mask": mask}
        if self._keep_last:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=ids, **kwargs)
        cache = getattr(out, "cache", None)
        self.cache = cache if cache is not None else getattr(out, "past_key_values", None)
        return out.logits[:, -1].float()  # (B, V)

    @torch.inference_mode()  # no autograd bookkeeping at all: ~10% off a small model's decode step
    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
        """ids, mask: (B, T) left-padded prompts. Chunks share the state, so the result is the same.
        A state that already holds tokens continues from them (a batch of one, no padding)."""
        ids, mask = ids.to(self.device), mask.to(self.device)
        if self.tokens:
            if ids.shape[0] != 1 or not bool(mask.all()):
                raise InputError("a state that holds tokens continues one sequence, without padding")
            self.tokens[0] += ids[0].tolist()
        else:
            self.mask = None if bool(mask.all()) else mask
            self.tokens = [row[m.bool()].tolist() for row, m in zip(ids.cpu(), mask.cpu())]
        T = ids.shape[1]
        step = T if not chunk_size or chunk_size >= T else chunk_size
        logits = None
        for start in range(0, T, step):
            end = min(start + step, T)
            logits = self._forward(ids[:, start:end], None if self.mask is None else self.mask[:, :end])
        return logits

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens: (B,) one new token per sequence -> logits (B, V) for the token after it."""
        if self.mask is not None:
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
        for row, tok in zip(self.tokens, tokens.tolist()):
            row.append(tok)
        return self._forward(tokens.to(self.device).view(-1, 1), self.mask)

    @property
    def compile_s(self) -> float:
        """Seconds spent so far compiling decode steps for this state's model (none here; FastDecodeState
        with compile=True)."""
        return 0.0

    def nbytes(self) -> int | None:
        """Memory of the decoding state right now, as the model's cache measures it (LayerCache.nbytes);
        None for a cache that does not report its size (a model from outside tnlm)."""
        if self.cache is None:
            return 0
        return self.cache.nbytes() if hasattr(self.cache, "nbytes") else None
