"""Requests' prompts as token ids.

Chat prompts come from tnlm.chat_template.encode_chat, the one encoder of the chat template: its
markers are special tokens only where the template puts them and message content is plain text, so
a message cannot open a turn of another role. Each turn is encoded on its own, so the ids of a
conversation are a prefix of the ids of the same conversation one turn later: what lets the server
continue a kept state.
"""

from __future__ import annotations

import threading
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
