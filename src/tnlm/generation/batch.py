"""Step-wise batched decoding in which sequences join and leave between steps (continuous batching).

`DecodeState` (state.py) decodes one fixed batch from start to end. A server needs more: a request
arrives while others are decoding, is prefilled on its own, joins the running batch, and leaves it
as soon as it finishes, without disturbing the other rows. This module does that for every family,
on top of the models' `cache=` interface:

- `SequenceState`: one sequence's decoding state (the model's cache for a batch of one) and the
  number of tokens it holds. `feed()` runs its prefill (or continues it with more tokens);
  `clone()` copies it (a prefix kept for reuse is never modified by the sequence that reuses it);
  `truncated(n)` keeps its first n tokens where the state allows it (KV caches can; a recurrent
  state cannot be rewound).
- `DecodeBatch`: the running batch. `join(key, state)`, `leave(key)`, `step(tokens)`.

How rows of different lengths share one batch: every step passes each row's own position
(`position_ids`), so positions never depend on the batch. A TransNormer row is a slice of the
(B, H, Dk, Dv) recurrent state and needs nothing else. A KV cache's columns are left-padded to the
longest row and an attention mask (B, columns) hides the padding; Infini-attention marks padded
columns with position -1 in its own state. A row that leaves takes its columns with it and the
columns no remaining row needs are dropped, so the batch never holds more than its longest row.

>>> import tnlm
>>> model = tnlm.create_model("tnl-tiny", seed=0).eval()
>>> batch, a, b = DecodeBatch(model), SequenceState(), SequenceState()
>>> logits_a, logits_b = feed(model, a, [10, 11, 12]), feed(model, b, [20])
>>> batch.join("a", a); batch.join("b", b)
>>> batch.step(torch.tensor([5, 6])).shape[0], batch.keys
(2, ['a', 'b'])
>>> kept = batch.leave("a", keep_state=True); (kept.length, batch.keys)
(4, ['b'])
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from tnlm.generation.fast import fast_step
from tnlm.generation.sampling import SamplingParams, next_tokens
from tnlm.layers.infini_attention import InfiniState
from tnlm.layers.softmax_attention import KVBuffer

# The two attributes of a tnlm cache object this module relies on (see tnlm.models): per-layer
# states, and the count of columns fed (the attention mask's length before the next call).


def _layers(cache: object) -> list:
    return cache.layers


def _with_layers(template: object, layers: list, *, columns: int) -> object:
    """A cache object of the template's class holding `layers` (the template is left unchanged)."""
    cache = copy.copy(template)
    cache.layers = layers
    cache.seen_tokens = columns
    return cache


# ---------------------------------------------------------------------------------------------------
# Row operations on one layer's state, per state type. Columns are token slots shared by the batch
# (KV caches, Infini's current segment); a row's real columns are always its last ones.


@dataclass(frozen=True)
class _RowOps:
    select: Callable  # (state, rows (R,) long, start) -> state of those rows, columns from `start` on
    cat: Callable  # (states) -> one state, columns left-padded to the widest
    clone: Callable
    columns: Callable[[object], int]
    truncate: Callable | None = None  # (state of one row, n) -> its first n tokens; None: impossible
    masked: bool = False  # padding columns need the model's attention mask


def _left_pad(x: torch.Tensor, width: int, *, value: float = 0) -> torch.Tensor:
    """Pad dim 1 on the left to `width`."""
    extra = width - x.shape[1]
    if extra == 0:
        return x
    pad = [0, 0] * (x.dim() - 2) + [extra, 0]
    return F.pad(x, pad, value=value)


def _kv_cat(states: Sequence[KVBuffer]) -> KVBuffer:
    width = max(s.length for s in states)
    k = torch.cat([_left_pad(s.k, width) for s in states])
    return KVBuffer(k, torch.cat([_left_pad(s.v, width) for s in states]))


_KV = _RowOps(
    select=lambda s, rows, start: KVBuffer(s.k[rows, start:], s.v[rows, start:]),
    cat=_kv_cat,
    clone=lambda s: KVBuffer(s.k.clone(), s.v.clone()),
    columns=lambda s: s.length,
    truncate=lambda s, n: KVBuffer(s.k[:, :n].clone(), s.v[:, :n].clone()),
    masked=True,
)


def _infini_select(s: InfiniState, rows: torch.Tensor, start: int) -> InfiniState:
    pos = s.pos[rows]
    live = (pos >= 0).any(0).nonzero()
    first = int(live[0]) if len(live) else pos.shape[1]  # columns that no kept row uses any more
    return InfiniState(
        memory=(s.memory[0][rows], s.memory[1][rows]), k=s.k[rows, first:], v=s.v[rows, first:],
        pos=pos[:, first:], base=s.base[rows], length=s.length[rows],
    )  # fmt: skip


def _infini_cat(states: Sequence[InfiniState]) -> InfiniState:
    width = max(s.k.shape[1] for s in states)
    return InfiniState(
        memory=(torch.cat([s.memory[0] for s in states]), torch.cat([s.memory[1] for s in states])),
        k=torch.cat([_left_pad(s.k, width) for s in states]),
        v=torch.cat([_left_pad(s.v, width) for s in states]),
        pos=torch.cat([_left_pad(s.pos, width, value=-1) for s in states]),  # -1: not a key
        base=torch.cat([s.base for s in states]),
        length=torch.cat([s.length for s in states]),
    )


def _infini_clone(s: InfiniState) -> InfiniState:
    values = {f.name: getattr(s, f.name) for f in fields(s)}
    values["memory"] = tuple(t.clone() for t in s.memory)
    return replace(s, **{k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})


_INFINI = _RowOps(select=_infini_select, cat=_infini_cat, clone=_infini_clone, columns=lambda s: s.k.shape[1])

_RECURRENT = _RowOps(  # a tensor (B, ...) per layer: TransNormer's (B, H, Dk, Dv) state
    select=lambda s, rows, start: s[rows],
    cat=torch.cat,
    clone=torch.clone,
    columns=lambda s: 0,
)


def _ops(state: object) -> _RowOps:
    if isinstance(state, torch.Tensor):
        return _RECURRENT
    if isinstance(state, KVBuffer):
        return _KV
    if isinstance(state, InfiniState):
        return _INFINI
    raise TypeError(f"no batching rule for a layer state of type {type(state).__name__}")


# ---------------------------------------------------------------------------------------------------


class _ModelCall:
    """The keyword names a model's forward takes (the cache argument is being renamed upstream)."""

    def __init__(self, model: nn.Module) -> None:
        params = inspect.signature(model.forward).parameters
        self.cache_kw = "cache" if "cache" in params else "past_key_values"
        self.keep_last = "logits_to_keep" in params

    def __call__(self, model: nn.Module, ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, object]:
        """ids (B, T) -> (logits of the last position (B, V) float32, the cache after them)."""
        cache = kwargs.pop("cache")
        kwargs[self.cache_kw] = cache
        if self.keep_last:
            kwargs["logits_to_keep"] = 1
        out = model(input_ids=ids, use_cache=True, **kwargs)
        new = getattr(out, "cache", None)
        return out.logits[:, -1].float(), new if new is not None else getattr(out, "past_key_values", None)


_CALLS: dict[type, _ModelCall] = {}


def _call(model: nn.Module) -> _ModelCall:
    if type(model) not in _CALLS:
        _CALLS[type(model)] = _ModelCall(model)
    return _CALLS[type(model)]


class SequenceState:
    """One sequence's decoding state: the model's cache for a batch of one (None before the first
    token) and `length`, the number of tokens it has consumed (the next token's position)."""

    def __init__(self, cache: object | None = None, length: int = 0) -> None:
        self.cache, self.length = cache, length

    def nbytes(self) -> int:
        return 0 if self.cache is None else self.cache.nbytes()  # the models' one measure of a state

    @property
    def truncatable(self) -> bool:
        """Whether `truncated(n)` works: a KV cache can drop its last tokens, a recurrent state cannot."""
        if self.cache is None:
            return True
        return all(_ops(s).truncate is not None for s in _layers(self.cache))

    def clone(self) -> SequenceState:
        if self.cache is None:
            return SequenceState()
        layers = [_ops(s).clone(s) for s in _layers(self.cache)]
        return SequenceState(_with_layers(self.cache, layers, columns=self.length), self.length)

    def truncated(self, n: int) -> SequenceState:
        """A new state holding only the first n tokens (0 < n <= length)."""
        if not 0 < n <= self.length:
            raise ValueError(f"cannot keep {n} of {self.length} tokens")
        if not self.truncatable:
            raise ValueError("this family's decoding state cannot be rewound to an earlier token")
        layers = [_ops(s).truncate(s, n) for s in _layers(self.cache)]
        return SequenceState(_with_layers(self.cache, layers, columns=n), n)


@torch.inference_mode()
def feed(model: nn.Module, state: SequenceState, tokens: Sequence[int], *, chunk_size: int | None = None) -> torch.Tensor:
    """Run `tokens` through the model after what `state` holds (a prefill, or its continuation);
    updates `state` in place and returns the logits (V,) float32 for the token after the last one.
    `chunk_size` bounds the tokens per forward call (the result does not depend on it)."""
    if not tokens:
        raise ValueError("feed() needs at least one token")
    device = next(model.parameters()).device
    ids = torch.tensor([list(tokens)], dtype=torch.long, device=device)  # (1, T)
    step = chunk_size if chunk_size and chunk_size < len(tokens) else len(tokens)
    logits = None
    for start in range(0, len(tokens), step):
        chunk = ids[:, start : start + step]
        positions = torch.arange(state.length, state.length + chunk.shape[1], device=device)[None]
        if state.cache is not None:
            state.cache.seen_tokens = state.length  # every column of a single sequence is real
        logits, state.cache = _call(model)(model, chunk, cache=state.cache, position_ids=positions, attention_mask=None)
        state.length += chunk.shape[1]
    return logits[0]


class DecodeBatch:
    """The running batch of a continuous-batching server. Rows are identified by hashable keys;
    `keys` gives the row order of `step`'s input and output. Steps take the fast one-token step of
    tnlm models (generation/fast.py) unless `reference` is set or the model is from outside tnlm; the
    reference is the model's forward with each row's positions and the batch's mask."""

    def __init__(self, model: nn.Module, *, reference: bool = False) -> None:
        self.model = model
        self._fast = None if reference else fast_step(model)  # None: the model's forward (the reference)
        self.keys: list[Hashable] = []
        self.cache: object | None = None  # the model's cache for all rows
        self.lengths = torch.zeros(0, dtype=torch.long)  # (B,) tokens each row holds
        self.mask: torch.Tensor | None = None  # (B, columns) long, 1 = real; only for KV caches

    def __len__(self) -> int:
        return len(self.keys)

    def nbytes(self) -> int:
        return SequenceState(self.cache).nbytes()

    def join(self, key: Hashable, state: SequenceState) -> None:
        """Add a prefilled sequence (its state moves into the batch; do not use it afterwards)."""
        if key in self.keys:
            raise ValueError(f"{key!r} is already in the batch")
        if state.cache is None:
            raise ValueError("prefill a sequence (feed) before it joins the batch")
        row_layers = _layers(state.cache)
        ops = [_ops(s) for s in row_layers]
        if self.cache is None:
            layers = list(row_layers)
        else:
            layers = [op.cat([a, b]) for op, a, b in zip(ops, _layers(self.cache), row_layers)]
        if ops[0].masked:  # the new row's columns are all real; everyone is left-padded to the widest
            row = torch.ones(1, state.length, dtype=torch.long)
            parts = [row] if self.mask is None else [self.mask, row]
            width = max(p.shape[1] for p in parts)
            self.mask = torch.cat([_left_pad(p, width) for p in parts])
        self.cache = _with_layers(state.cache, layers, columns=ops[0].columns(layers[0]))
        self.keys.append(key)
        self.lengths = torch.cat([self.lengths, torch.tensor([state.length])])
        state.cache = None

    def leave(self, key: Hashable, *, keep_state: bool = False) -> SequenceState | None:
        """Remove a row; with keep_state, return its state (e.g. to keep a conversation's prefix)."""
        i = self.keys.index(key)
        kept = self._select(torch.tensor([i])) if keep_state else None
        rest = torch.tensor([j for j in range(len(self.keys)) if j != i], dtype=torch.long)
        if len(rest):
            self.cache, self.mask = self._select(rest)
        else:
            self.cache, self.mask = None, None
        length = int(self.lengths[i])
        self.lengths = self.lengths[rest]
        self.keys.pop(i)
        return SequenceState(kept[0], length) if kept is not None else None

    def _select(self, rows: torch.Tensor) -> tuple[object, torch.Tensor | None]:
        """The cache and mask of some rows, without the columns none of them uses."""
        layers = _layers(self.cache)
        mask, start = None, 0
        if self.mask is not None:
            mask = self.mask[rows]
            live = mask.any(0).nonzero()
            start = int(live[0]) if len(live) else mask.shape[1]
            mask = mask[:, start:]
        rows = rows.to(next(self.model.parameters()).device)
        picked = [_ops(s).select(s, rows, start) for s in layers]
        return _with_layers(self.cache, picked, columns=_ops(picked[0]).columns(picked[0])), mask

    @torch.inference_mode()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B,): the next token of every row, in `keys` order -> logits (B, V) float32."""
        if len(tokens) != len(self.keys):
            raise ValueError(f"{len(tokens)} tokens for a batch of {len(self.keys)}")
        device = next(self.model.parameters()).device
        mask = None
        if self.mask is not None:
            self.cache.seen_tokens = self.mask.shape[1]
            mask = torch.cat([self.mask, self.mask.new_ones(len(self.keys), 1)], dim=1)
        positions = self.lengths.to(device)  # (B,): each row's own next position
        ids, mask_on = tokens.to(device), None if mask is None else mask.to(device)
        if self._fast is not None:
            logits = self._fast(ids, positions=positions, mask=mask_on, cache=self.cache)
            self.cache.seen_tokens += 1  # what the model's forward counts
        else:
            logits, self.cache = _call(self.model)(
                self.model, ids.view(-1, 1), cache=self.cache, position_ids=positions[:, None], attention_mask=mask_on,
            )  # fmt: skip
        self.mask = mask
        self.lengths = self.lengths + 1
        return logits


# ---------------------------------------------------------------------------------------------------
# sampling rows that each have their own parameters, generator and history


@dataclass
class RowSampler:
    """How one row picks its tokens. `seen` (V,) bool marks the tokens its repetition penalty
    counts (the prompt and the output); it is kept only when the penalty is on."""

    params: SamplingParams
    generator: torch.Generator
    seen: torch.Tensor | None = None

    @classmethod
    def create(cls, params: SamplingParams, *, seed: int, vocab_size: int, prompt: Sequence[int]) -> RowSampler:
        seen = None
        if params.repetition_penalty != 1.0:
            seen = torch.zeros(vocab_size, dtype=torch.bool)
            seen[torch.tensor(list(prompt), dtype=torch.long)] = True
        return cls(params, torch.Generator().manual_seed(seed), seen)


def sample_rows(logits: torch.Tensor, samplers: Sequence[RowSampler]) -> list[int]:
    """logits (B, V) -> one token per row; rows with the same parameters are sampled together, each
    from its own generator, so a row's tokens do not depend on the other rows."""
    logits = logits.float().cpu()
    out = [0] * len(samplers)
    groups: dict[SamplingParams, list[int]] = {}
    for i, s in enumerate(samplers):
        groups.setdefault(s.params, []).append(i)
    for params, rows in groups.items():
        part = logits if len(rows) == len(samplers) else logits[rows]  # one group (the usual case): no copy
        penalised = params.repetition_penalty != 1.0
        seen = torch.stack([samplers[i].seen for i in rows]) if penalised else None
        toks = next_tokens(part, params=params, seen=seen, generators=[samplers[i].generator for i in rows])
        for i, tok in zip(rows, toks.tolist()):
            out[i] = tok
            if samplers[i].seen is not None:
                samplers[i].seen[tok] = True
    return out
