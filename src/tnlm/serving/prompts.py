"""Requests' prompts as token ids.

Chat prompts come from tnlm.chat_template.encode_chat, the one encoder of the chat template: its
markers are special tokens only where the template puts them and message content is plain text, so
a message cannot open a turn of another role. Each turn is encoded on its own, so the ids of a
conversation are a prefix of the ids of the same conversation one turn later: what lets the server
continue a kept state, and what lets ChatPrompts keep each turn's ids and encode only new messages.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence

from tnlm.chat_template import encode_chat
from tnlm.generation.tokenizer import TextTokenizer

# OpenAI's newer "developer" role is what tnlm's template calls "system"
ROLE_NAMES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def chat_prompt(tokenizer: TextTokenizer, messages: Sequence[tuple[str, str]]) -> list[int]:
    """(role, content) pairs -> the ids of the conversation and the opening of the assistant's turn.
    A tokenizer without the chat markers raises ConfigError."""
    turns = [{"role": ROLE_NAMES[role], "content": content} for role, content in messages]
    return encode_chat(turns, tokenizer, add_generation_prompt=True).ids


class ChatPrompts:
    """chat_prompt() that keeps each turn's ids: the next request of a conversation encodes only its
    new messages, so the cost of building a prompt does not grow with the conversation. The ids are
    chat_prompt's (encode_chat concatenates the ids of each turn, which depend on that turn alone,
    then the assistant turn's opening). Turns are kept in an LRU keyed by role and content, bounded by
    `max_bytes` (content characters plus 8 bytes per id). The server calls it on its event loop only;
    it is not locked."""

    def __init__(self, tokenizer: TextTokenizer, *, max_bytes: int = 64 * 2**20) -> None:
        self.tokenizer, self.max_bytes = tokenizer, max_bytes
        self._turns: OrderedDict[tuple[str, str], array] = OrderedDict()
        self.nbytes = 0
        self._opening: list[int] | None = None

    def __len__(self) -> int:
        return len(self._turns)

    def __call__(self, messages: Sequence[tuple[str, str]]) -> list[int]:
        """The same ids as chat_prompt(tokenizer, messages); ConfigError likewise."""
        ids: list[int] = []
        for role, content in messages:
            ids += self._turn(ROLE_NAMES[role], content)
        if self._opening is None:
            self._opening = encode_chat([], self.tokenizer, add_generation_prompt=True).ids
        return ids + self._opening

    def _turn(self, role: str, content: str) -> array:
        key = (role, content)
        ids = self._turns.get(key)
        if ids is not None:
            self._turns.move_to_end(key)
            return ids
        ids = array("q", encode_chat([{"role": role, "content": content}], self.tokenizer).ids)
        size = _turn_bytes(content, ids)
        if size <= self.max_bytes:
            self._turns[key] = ids
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                (_, old), old_ids = self._turns.popitem(last=False)
                self.nbytes -= _turn_bytes(old, old_ids)
        return ids


def _turn_bytes(content: str, ids: array) -> int:
    return len(content) + ids.itemsize * len(ids)


class LockedTokenizer:
    """A tokenizer shared by the event loop (encoding prompts) and the scheduler thread (decoding
    output): one call at a time. (A Hugging Face fast tokenizer resets its truncation and padding
    settings inside encode(), and two threads doing that at once fail with "Already borrowed".)"""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer, self._lock = tokenizer, threading.Lock()
        self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        with self._lock:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens,
                                          split_special_tokens=split_special_tokens)  # fmt: skip

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(ids)

    def token_id(self, token: str) -> int | None:
        with self._lock:
            return self._tokenizer.token_id(token)
