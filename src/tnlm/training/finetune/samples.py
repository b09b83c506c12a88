"""Dialogues -> training samples: token ids and aligned labels with loss on the assistant's answers only.

Ids come from `tnlm.chat_template.encode_chat` and nowhere else; its `assistant_mask` marks each
answer's tokens and the end marker that closes it. A sample of n tokens trains n - 1 positions:
`input_ids = ids[:-1]`, `labels[t] = ids[t + 1]` where that token is masked in, -100 elsewhere.

Two ways to cut a dialogue into samples:

- "dialogue": the whole dialogue is one sample with loss on every answer. A dialogue longer than the
  window (seq_len + 1 tokens) is split between exchanges (an exchange starts at a user or system
  message that follows an answer); each piece keeps the leading system message when it fits. An exchange
  that alone is longer than the window is cut into windows of whole tokens (overlapping by one token,
  so every answer token is still a target once).
- "turn": one sample per answer, with the history before it as context (loss on that answer only); a
  history too long for the window loses its oldest exchanges first (the system message is kept when it fits).

encode_chat encodes each message on its own and concatenates, so a dialogue is encoded message by message
once, and every piece is a concatenation of whole messages' ids: nothing is re-tokenized, no split
falls inside a token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tnlm.chat_template import ASSISTANT_ROLE, ChatTokenizer, encode_chat
from tnlm.training.finetune.dialogues import Dialogue
from tnlm.training.trainer import IGNORE_INDEX

SAMPLE_MODES = ("dialogue", "turn")


@dataclass(frozen=True)
class Sample:
    input_ids: np.ndarray  # (n,) int64
    labels: np.ndarray  # (n,) int64: the target of each position (the next token), IGNORE_INDEX = no loss

    @property
    def targets(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass
class SampleStats:
    dialogues: int = 0
    samples: int = 0
    tokens: int = 0  # input positions of all samples
    targets: int = 0  # positions with a loss
    split: int = 0  # dialogues (or histories) that did not fit the window whole
    cut: int = 0  # exchanges longer than the window, cut at token boundaries
    dropped: int = 0  # pieces without an answer token (nothing to learn)

    def describe(self) -> str:
        text = (f"{self.dialogues} dialogues -> {self.samples} samples, {self.tokens} tokens, "
                f"{self.targets} of them trained ({self.targets / max(self.tokens, 1):.0%})")  # fmt: skip
        notes = [f"{self.split} split at turn boundaries" if self.split else "",
                 f"{self.cut} exchanges longer than the window cut between tokens" if self.cut else "",
                 f"{self.dropped} pieces without an answer dropped" if self.dropped else ""]  # fmt: skip
        notes = [n for n in notes if n]
        return text + (f" ({'; '.join(notes)})" if notes else "")


@dataclass
class Piece:
    """Token ids of whole messages and which of them are trained."""

    ids: list[int] = field(default_factory=list)
    mask: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def __add__(self, other: Piece) -> Piece:
        return Piece(self.ids + other.ids, self.mask + other.mask)


def build_samples(dialogues: Sequence[Dialogue], tokenizer: ChatTokenizer, *, seq_len: int,
                  mode: str = "dialogue") -> tuple[list[Sample], SampleStats]:  # fmt: skip
    """Samples of at most `seq_len` positions from every dialogue, in order."""
    if mode not in SAMPLE_MODES:
        raise ValueError(f"mode must be one of {SAMPLE_MODES}, not {mode!r}")
    stats = SampleStats(dialogues=len(dialogues))
    samples: list[Sample] = []
    cut = dialogue_pieces if mode == "dialogue" else turn_pieces
    for dialogue in dialogues:
        encoded = [encode_chat([m], tokenizer) for m in dialogue.messages]
        turns = [Piece(list(e.ids), list(e.assistant_mask)) for e in encoded]
        roles = [m["role"] for m in dialogue.messages]
        for piece in cut(turns, roles, window=seq_len + 1, stats=stats):
            sample = to_sample(piece)
            if sample.targets == 0:
                stats.dropped += 1
                continue
            samples.append(sample)
            stats.tokens += len(sample.input_ids)
            stats.targets += sample.targets
    stats.samples = len(samples)
    return samples, stats


def to_sample(piece: Piece) -> Sample:
    ids = np.asarray(piece.ids, dtype=np.int64)
    mask = np.asarray(piece.mask, dtype=bool)
    labels = np.where(mask[1:], ids[1:], IGNORE_INDEX)
    return Sample(input_ids=ids[:-1], labels=labels)


def exchanges(turns: list[Piece], roles: list[str]) -> tuple[Piece | None, list[Piece]]:
    """(the leading system messages, or None; the exchanges). An exchange starts at a message that is
    not an answer and follows one, so it holds the question(s) and the answer(s) to them."""
    start = 0
    while start < len(roles) and roles[start] == "system":
        start += 1
    header = sum(turns[1:start], turns[0]) if start else None
    groups: list[Piece] = []
    for i in range(start, len(turns)):
        if not groups or (roles[i] != ASSISTANT_ROLE and roles[i - 1] == ASSISTANT_ROLE):
            groups.append(Piece())
        groups[-1] = groups[-1] + turns[i]
    return header, groups


def dialogue_pieces(turns: list[Piece], roles: list[str], *, window: int, stats: SampleStats) -> list[Piece]:
    """The dialogue whole when it fits in `window` tokens, else pieces of whole exchanges."""
    whole = sum(turns[1:], turns[0])
    if len(whole) <= window:
        return [whole]
    stats.split += 1
    header, groups = exchanges(turns, roles)
    pieces: list[Piece] = []
    current: Piece | None = None
    for group in groups:
        if current is not None and len(current) + len(group) <= window:
            current = current + group
            continue
        if current is not None:
            pieces.append(current)
        current = header + group if header is not None and len(header) + len(group) <= window else group
        if len(current) > window:
            pieces += cut_tokens(current, window=window, stats=stats)
            current = None
    if current is not None:
        pieces.append(current)
    return pieces


def turn_pieces(turns: list[Piece], roles: list[str], *, window: int, stats: SampleStats) -> list[Piece]:
    """One piece per answer: the answer trained, the messages before it as untrained context."""
    pieces = []
    for j, role in enumerate(roles):
        if role != ASSISTANT_ROLE:
            continue
        context = [Piece(t.ids, [False] * len(t)) for t in turns[:j]]
        pieces += last_window([*context, turns[j]], roles[: j + 1], window=window, stats=stats)
    return pieces


def last_window(turns: list[Piece], roles: list[str], *, window: int, stats: SampleStats) -> list[Piece]:
    """The last exchange with as much of the history before it as fits (newest first), the system
    message in front when it fits too."""
    header, groups = exchanges(turns, roles)
    piece = groups[-1]
    if len(piece) > window:
        stats.split += 1
        return cut_tokens(piece, window=window, stats=stats)
    earlier = groups[:-1]
    while earlier and len(earlier[-1]) + len(piece) <= window:
        piece = earlier.pop() + piece
    complete = not earlier
    if header is not None and len(header) + len(piece) <= window:
        piece = header + piece
    else:
        complete = complete and header is None
    stats.split += not complete
    return [piece]


def cut_tokens(piece: Piece, *, window: int, stats: SampleStats) -> list[Piece]:
    """Windows of `window` tokens overlapping by one: every position after the first is a target in
    exactly one window."""
    stats.cut += 1
    step = window - 1
    return [Piece(piece.ids[s : s + window], piece.mask[s : s + window]) for s in range(0, len(piece) - 1, step)]
