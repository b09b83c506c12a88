"""Log-likelihood of continuations given contexts, batched, with the context computed once per item.

A request is (context ids, continuation ids, group). Requests of one group (the choices of one
multiple-choice item) usually start with the same tokens; with `reuse_context` that common prefix
(the context, and any leading tokens all choices share) runs once, its cache is copied for every
request of the group (tnlm.evaluation.cache), and only each request's remaining tokens run again. Without it, every request runs whole, as lm-evaluation-harness
runs it. Both give the same numbers (tests check 1e-5); reuse saves (choices - 1) context passes.

Truncation follows the harness: when context + continuation exceed `max_length + 1` tokens, the
context loses tokens on the left.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tnlm.evaluation.batching import model_forward, pad_batch
from tnlm.evaluation.cache import select_cache_rows


@dataclass(frozen=True)
class TokenRequest:
    context: Sequence[int]  # at least one token
    continuation: Sequence[int]  # at least one token
    group: Hashable = None  # requests with the same group may share their common prefix


@dataclass(frozen=True)
class Score:
    logprob: float  # sum of the continuation tokens' log-probabilities (natural log)
    is_greedy: bool  # every continuation token is the model's argmax
    tokens: int


@dataclass
class _Prepared:
    inp: list[int]  # the model's input: (context + continuation)[:-1], truncated on the left
    targets: list[int]  # the continuation tokens

    @property
    def start(self) -> int:
        """Input position whose logits predict the first continuation token."""
        return len(self.inp) - len(self.targets)


def _prepare(req: TokenRequest, max_length: int | None) -> _Prepared:
    if not req.context or not req.continuation:
        raise ValueError("a scoring request needs at least one context and one continuation token")
    cont = list(req.continuation)
    if max_length is not None and len(cont) > max_length:
        raise ValueError(f"a continuation of {len(cont)} tokens does not fit the model's {max_length}-token context")
    full = list(req.context) + cont
    if max_length is not None:
        full = full[-(max_length + 1) :]
    return _Prepared(inp=full[:-1], targets=cont)


def _common_prefix(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n


def _score(logits: torch.Tensor, targets: list[int]) -> Score:
    """logits (n, V) predicting targets (n,) -> summed log-probability and greediness."""
    logp = F.log_softmax(logits.float(), dim=-1)
    t = torch.tensor(targets, device=logits.device)
    total = logp.gather(-1, t[:, None]).sum().item()
    return Score(logprob=total, is_greedy=bool((logp.argmax(-1) == t).all()), tokens=len(targets))


@dataclass
class _Unit:
    """Requests run together: `shared` tokens of their inputs run once (0: each runs whole)."""

    members: list[int]
    shared: int

    def length(self, prepared: list[_Prepared]) -> int:
        return max(len(prepared[i].inp) for i in self.members)


def _plan(prepared: list[_Prepared], requests: Sequence[TokenRequest], reuse: bool, min_saving: float) -> list[_Unit]:
    groups: dict[Hashable, list[int]] = {}
    for i, r in enumerate(requests):
        key = ("group", r.group) if r.group is not None else ("single", i)
        groups.setdefault(key, []).append(i)
    units = []
    for members in groups.values():
        shared = _common_prefix([prepared[i].inp for i in members]) if reuse and len(members) > 1 else 0
        total = sum(len(prepared[i].inp) for i in members)
        if shared >= 1 and (len(members) - 1) * shared >= min_saving * total:
            units.append(_Unit(members, shared))
        else:
            units += [_Unit([i], 0) for i in members]
    return units


def _run_whole(model: nn.Module, prepared: list[_Prepared], members: list[int], device: torch.device) -> dict[int, Score]:
    """Each request runs whole, left-padded, so every continuation ends at the last column."""
    ids, mask = pad_batch([prepared[i].inp for i in members], left=True, device=device)
    keep = max(len(prepared[i].targets) for i in members)
    logits, _ = model_forward(model, ids, mask, keep=keep)  # (B, keep, V)
    out = {}
    for b, i in enumerate(members):
        n = len(prepared[i].targets)
        out[i] = _score(logits[b, keep - n :], prepared[i].targets)
    return out


def _run_shared(model: nn.Module, prepared: list[_Prepared], units: list[_Unit], device: torch.device) -> dict[int, Score]:
    """Each unit's shared prefix runs once (left-padded across units), keeping the logits of its
    last positions that some member scores; its cache is copied for every member whose input goes
    on, and those remainders run together (right-padded)."""
    prefix_ids, prefix_mask = pad_batch([prepared[u.members[0]].inp[: u.shared] for u in units], left=True, device=device)
    keep = max(max(1, u.shared - min(prepared[i].start for i in u.members)) for u in units)
    head, cache = model_forward(model, prefix_ids, prefix_mask, keep=keep, use_cache=True)  # (G, keep, V)
    rows = [(g, i) for g, u in enumerate(units) for i in u.members if len(prepared[i].inp) > u.shared]
    tail = None
    if rows:
        index = torch.tensor([g for g, _ in rows], device=device)
        copies = select_cache_rows(cache, index, batch=len(units))
        ids, suffix_mask = pad_batch([prepared[i].inp[units[g].shared :] for g, i in rows], left=False, device=device)
        mask = None
        if prefix_mask is not None or suffix_mask is not None:
            past = prefix_mask[index] if prefix_mask is not None else torch.ones_like(prefix_ids[index])
            now = suffix_mask if suffix_mask is not None else torch.ones_like(ids)
            mask = torch.cat([past, now], dim=1)
        tail, _ = model_forward(model, ids, mask, cache=copies, use_cache=True)  # (R, S, V)
    row_of = {i: r for r, (_, i) in enumerate(rows)}
    out = {}
    for g, u in enumerate(units):
        for i in u.members:
            p = prepared[i]
            # scored input positions start .. len(inp) - 1: those before `shared` from the prefix run
            parts = [head[g, keep - (u.shared - p.start) :]] if p.start < u.shared else []
            if i in row_of:
                parts.append(tail[row_of[i], max(0, p.start - u.shared) : len(p.inp) - u.shared])
            out[i] = _score(torch.cat(parts), p.targets)
    return out


def _batches(units: list[_Unit], prepared: list[_Prepared], batch_size: int) -> list[list[_Unit]]:
    """Units sorted longest first (padding stays small), grouped so each forward holds about
    `batch_size` sequences; a unit is never split."""
    order = sorted(units, key=lambda u: (u.shared > 0, -u.length(prepared)))
    batches: list[list[_Unit]] = []
    current: list[_Unit] = []
    rows = 0
    for u in order:
        if current and (rows + len(u.members) > batch_size or (u.shared > 0) != (current[0].shared > 0)):
            batches.append(current)
            current, rows = [], 0
        current.append(u)
        rows += len(u.members)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def score_tokens(
    model: nn.Module,
    requests: Sequence[TokenRequest],
    *,
    batch_size: int = 16,
    reuse_context: bool = True,
    max_length: int | None = None,
    min_saving: float = 1 / 3,
    on_progress: Callable[[int], None] | None = None,
) -> list[Score]:
    """Score every request (in input order). `reuse_context` needs a model whose cache rows can be
    copied (every tnlm family); a group shares its prefix when that saves at least `min_saving` of
    the tokens its requests would run whole (0: whenever they share a token). A second forward pass
    and the cache copies cost something, and the LM head runs on every scored token either way, so
    a small saving is slower in practice (PIQA's choices differ early; WinoGrande's contexts are
    short). `max_length` truncates inputs on the left as the harness does."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prepared = [_prepare(r, max_length) for r in requests]
    device = next(model.parameters()).device
    scores: dict[int, Score] = {}
    for batch in _batches(_plan(prepared, requests, reuse_context, min_saving), prepared, batch_size):
        if batch[0].shared:
            done = _run_shared(model, prepared, batch, device)
        else:
            done = _run_whole(model, prepared, [i for u in batch for i in u.members], device)
        scores.update(done)
        if on_progress is not None:
            on_progress(len(done))
    return [scores[i] for i in range(len(requests))]
