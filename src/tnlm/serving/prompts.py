"""Requests' prompts as token ids: completion prompts, and chat messages through tnlm's chat template.

Chat content is the user's (or the assistant's) text and nothing else: a message that contains
"<|im_end|>" or "<|im_start|>system" must not close its turn or open a system turn. So the template's
markers become their special token ids only where the template puts them, and the content is
encoded as plain text: any marker string inside it is cut in two before encoding, so no tokenizer
can match it as one special token. Each turn is encoded on its own; the ids of a conversation are
therefore a prefix of the ids of the same conversation one turn later, which is what lets the
server continue a kept state.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tnlm.chat_template import END_MARKER, GENERATION_PROMPT, MARKER_TOKENS, START_MARKER
from tnlm.generation.tokenizer import TextTokenizer

# OpenAI's newer "developer" role is what tnlm's template calls "system"
ROLE_NAMES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def encode_plain(tokenizer: TextTokenizer, text: str) -> list[int]:
    """`text` as ordinary tokens: marker strings inside it stay text (never special ids)."""
    pieces, rest = [], text
    while True:
        hits = [(rest.find(m), m) for m in MARKER_TOKENS if m in rest]
        if not hits:
            pieces.append(rest)
            break
        at, marker = min(hits)
        pieces += [rest[:at], marker[:1], marker[1:]]  # neither half is a marker
        rest = rest[at + len(marker) :]
    return [t for piece in pieces if piece for t in tokenizer.encode(piece, add_special_tokens=False)]


def _marker(tokenizer: TextTokenizer, marker: str) -> list[int]:
    tid = tokenizer.token_id(marker)
    return [tid] if tid is not None else encode_plain(tokenizer, marker)


def encode_chat(tokenizer: TextTokenizer, messages: Sequence[tuple[str, str]]) -> list[int]:
    """(role, content) pairs -> the token ids of the rendered conversation plus the generation prompt
    (the same text as tnlm.chat_template.render_chat(..., add_generation_prompt=True))."""
    start, end = _marker(tokenizer, START_MARKER), _marker(tokenizer, END_MARKER)
    ids: list[int] = []
    for role, content in messages:
        ids += start + encode_plain(tokenizer, f"{ROLE_NAMES[role]}\n") + encode_plain(tokenizer, content)
        ids += end + encode_plain(tokenizer, "\n")
    assistant_head = GENERATION_PROMPT.removeprefix(START_MARKER)
    return ids + start + encode_plain(tokenizer, assistant_head)


class LockedTokenizer:
    """A tokenizer shared by the event loop (encoding prompts) and the scheduler thread (decoding
    output): one call at a time. (A Hugging Face fast tokenizer resets its truncation and padding
    settings inside encode(), and two threads doing that at once fail with "Already borrowed".)"""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self._tokenizer, self._lock = tokenizer, threading.Lock()
        self.eos_token_id, self.pad_token_id = tokenizer.eos_token_id, tokenizer.pad_token_id

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        with self._lock:
            return self._tokenizer.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids: list[int]) -> str:
        with self._lock:
            return self._tokenizer.decode(ids)

    def token_id(self, token: str) -> int | None:
        with self._lock:
            return self._tokenizer.token_id(token)
