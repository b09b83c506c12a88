"""A memory-bounded LRU of decoding states keyed by the tokens they hold.

When a request finishes, the server keeps the state its sequence ended with, keyed by every token
that state has consumed. A later request whose prompt starts with those tokens (the next turn of the
same conversation: the earlier turns, the reply, then the new message) continues from a copy of that
state and feeds the model only the rest. For TransNormer the kept state is a fixed-size recurrent
state, so a long conversation costs the same to keep as a short one and its next turn costs only its
new tokens. A recurrent state cannot be cut back, so the scheduler also keeps it one token before
the end of each prompt: that one serves a regenerated reply (the same prompt again) and a next turn
whose earlier reply tokenizes differently from how it was generated; it supersedes the entries of
the conversation's earlier turns, so a conversation holds two states, not one per turn. A KV cache
can be cut back to any earlier token, so for the Transformer one entry per conversation serves all
of that, and a prompt that merely shares a beginning with a kept one (the same system prompt) reuses
that part.

Only the scheduler thread uses a StateCache; it is not locked.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tnlm.generation.batch import SequenceState


@dataclass
class _Entry:
    key: np.ndarray  # (T,) int64 token ids the state has consumed
    state: SequenceState
    nbytes: int  # the state's tensors plus the key


@dataclass
class CacheHit:
    state: SequenceState  # a private copy, ready to be continued
    tokens: int  # how many of the prompt's tokens it already holds
    entry: int | None  # the entry it came from (None: a miss, an empty state)


def _common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class StateCache:
    """lookup(prompt) -> the longest usable kept prefix; put(tokens, state) keeps one.

    `max_bytes` bounds the kept states (tensors and keys); the least recently used go first. A hit
    always leaves at least one prompt token to feed (its logits give the first new token). Partial
    reuse of a KV cache (a prefix of a kept key) needs at least `min_shared` tokens in common.
    """

    def __init__(self, max_bytes: int, *, min_shared: int = 16) -> None:
        self.max_bytes, self.min_shared = max_bytes, min_shared
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._next_id = 0
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _usable(self, entry: _Entry, prompt: np.ndarray) -> int:
        """Tokens of `prompt` this entry can stand for (0: none)."""
        limit = len(prompt) - 1  # one token must remain to be fed
        if len(entry.key) <= limit and _common_prefix(entry.key, prompt) == len(entry.key):
            return len(entry.key)
        if not entry.state.truncatable:
            return 0
        shared = _common_prefix(entry.key, prompt[:limit])
        return shared if shared >= self.min_shared else 0

    def lookup(self, prompt: Sequence[int]) -> CacheHit:
        """A copy of the state that covers the longest beginning of `prompt`, or an empty state."""
        ids = np.asarray(prompt, dtype=np.int64)
        best, best_len = None, 0
        for entry_id, entry in self._entries.items():
            n = self._usable(entry, ids)
            if n > best_len:
                best, best_len = entry_id, n
        if best is None:
            self.misses += 1
            return CacheHit(SequenceState(), 0, None)
        self.hits += 1
        self._entries.move_to_end(best)
        state = self._entries[best].state
        copy = state.clone() if best_len == state.length else state.truncated(best_len)
        return CacheHit(copy, best_len, best)

    def put(self, tokens: Sequence[int], state: SequenceState, *, supersede: bool = False) -> None:
        """Keep `state`, which has consumed exactly `tokens` (the cache owns it from now on). An entry
        with the same tokens is replaced. `supersede=True` also drops every entry whose tokens begin
        `tokens`: the earlier turns of the same conversation, which its next turn no longer needs."""
        key = np.asarray(tokens, dtype=np.int64)
        if state.length != len(key) or not len(key):
            raise ValueError(f"a state holding {state.length} tokens cannot be kept under {len(key)} tokens")
        for entry_id, entry in list(self._entries.items()):
            same = np.array_equal(entry.key, key)
            if same or (supersede and len(entry.key) < len(key) and _common_prefix(entry.key, key) == len(entry.key)):
                self._drop(entry_id)
        entry = _Entry(key, state, state.nbytes() + key.nbytes)
        if entry.nbytes > self.max_bytes:
            return
        self._entries[self._next_id] = entry
        self._next_id += 1
        self.nbytes += entry.nbytes
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
            self.evictions += 1

    def _drop(self, entry_id: int) -> None:
        self.nbytes -= self._entries.pop(entry_id).nbytes

    def clear(self) -> None:
        self._entries.clear()
        self.nbytes = 0
