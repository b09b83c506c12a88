"""tnlm's chat template, defined once: the SFT trainer trains with it, the tokenizer trainer reserves its
marker tokens, and `tnlm chat` / the server build prompts with it.

A conversation renders as (ChatML-style markers; every turn ends with a newline):

    <|im_start|>system
    You are helpful.<|im_end|>
    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant
    Hello.<|im_end|>

With `add_generation_prompt=True` the text ends with "<|im_start|>assistant\\n" and the model writes the
reply; it ends the reply with END_MARKER, which generation treats as a stop token.

Token ids come from `encode_chat`, never from tokenizing the rendered text: the markers are the template's
own special tokens, and everything a user or model wrote (the content of every message) is encoded as
plain text, so a message containing "<|im_end|>\\n<|im_start|>system" stays text and cannot open a
turn of another role. `render_chat` gives the same conversation as a string, for display and for tools
that want text (its Jinja twin `CHAT_TEMPLATE_JINJA` is stored in saved tokenizers).

>>> render_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tnlm.errors import ConfigError

START_MARKER = "<|im_start|>"
END_MARKER = "<|im_end|>"
# tokenizers must hold these as single special tokens
MARKER_TOKENS: tuple[str, ...] = (START_MARKER, END_MARKER)
ROLES: tuple[str, ...] = ("system", "user", "assistant")
ASSISTANT_ROLE = "assistant"
GENERATION_PROMPT = f"{START_MARKER}{ASSISTANT_ROLE}\n"

# The same template for Hugging Face tokenizers (`tokenizer.chat_template = CHAT_TEMPLATE_JINJA`);
# tests check that `apply_chat_template` and `render_chat` give identical text. Use it for text only:
# tokenizing its output would read markers typed inside messages as real ones (use `encode_chat`).
CHAT_TEMPLATE_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class ChatTokenizer(Protocol):
    """What `encode_chat` needs; tnlm.generation's ByteTokenizer and HFTokenizer (which wraps any
    Hugging Face tokenizer) have it."""

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; split_special_tokens=True encodes special-token strings in it as plain text."""
        ...

    def token_id(self, token: str) -> int | None:
        """The id of a single (special) token, or None when the vocabulary lacks it."""
        ...


@dataclass(frozen=True)
class ChatTokens:
    """A conversation as token ids. `assistant_mask[i]` is True where token i is an assistant reply's
    content or the END_MARKER that closes it: what an answer-only SFT loss trains on (labels are the
    ids where the mask is True, ignored elsewhere); `len(ids) == len(assistant_mask)`."""

    ids: list[int]
    assistant_mask: list[bool]


def _check_message(message: Mapping[str, str], index: int) -> tuple[str, str]:
    role, content = message.get("role"), message.get("content")
    if role not in ROLES:
        raise ConfigError(f"message {index} has role {role!r}; use one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise ConfigError(f"message {index} ({role}) needs a string 'content', got {type(content).__name__}")
    return role, content


def render_turn(role: str, content: str) -> str:
    """One complete turn: marker, role, newline, content, end marker, newline."""
    return f"{START_MARKER}{role}\n{content}{END_MARKER}\n"


def render_chat(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = False) -> str:
    """The text of a conversation (a list of {"role", "content"} dicts)."""
    turns = [render_turn(*_check_message(m, i)) for i, m in enumerate(messages)]
    return "".join(turns) + (GENERATION_PROMPT if add_generation_prompt else "")


def marker_id(tokenizer: ChatTokenizer, marker: str) -> int:
    """The id of a chat marker; a tokenizer without it cannot keep roles apart, so it is refused."""
    token = tokenizer.token_id(marker)
    if token is None:
        raise ConfigError(f"the tokenizer has no {marker} token, so chat roles cannot be kept apart: use a "
                          f"tokenizer made by `tnlm tokenizer train`, or add {', '.join(MARKER_TOKENS)} as special tokens")
    return token


def _plain(tokenizer: ChatTokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)


def turn_start_ids(tokenizer: ChatTokenizer, role: str) -> list[int]:
    """START_MARKER, the role and its newline: what precedes a message's content."""
    return [marker_id(tokenizer, START_MARKER), *_plain(tokenizer, f"{role}\n")]


def turn_end_ids(tokenizer: ChatTokenizer, *, with_marker: bool = True) -> list[int]:
    """END_MARKER and the newline after it: what follows a message's content (without the marker
    when the model already wrote it)."""
    marker = [marker_id(tokenizer, END_MARKER)] if with_marker else []
    return marker + _plain(tokenizer, "\n")


def encode_chat(messages: Sequence[Mapping[str, str]], tokenizer: ChatTokenizer, *,
                add_generation_prompt: bool = False) -> ChatTokens:
    """The one way to turn a conversation into token ids (SFT, chat and the server all use it).

    Each turn is START_MARKER, the role and a newline, the content, END_MARKER and a newline, as
    `render_chat` writes it. The two markers are the tokenizer's special tokens (a tokenizer without
    them is refused with ConfigError); the role, the newlines and above all the content are encoded as
    plain text with special tokens split, so markers typed inside a message stay text. No BOS is added
    (pretraining documents have none either). With `add_generation_prompt=True` the ids end with the
    opening of an assistant turn for the model to continue.

    Example, for answer-only SFT labels with a Hugging Face tokenizer:

        from tnlm.generation import HFTokenizer
        chat = encode_chat(messages, HFTokenizer(hf_tokenizer))
        labels = [t if keep else -100 for t, keep in zip(chat.ids, chat.assistant_mask)]
    """
    ids: list[int] = []
    mask: list[bool] = []
    for i, message in enumerate(messages):
        role, content = _check_message(message, i)
        trained = role == ASSISTANT_ROLE
        head, body, end = turn_start_ids(tokenizer, role), _plain(tokenizer, content), turn_end_ids(tokenizer)
        ids += head + body + end
        mask += [False] * len(head) + [trained] * (len(body) + 1) + [False] * (len(end) - 1)  # end[0] is END_MARKER
    if add_generation_prompt:
        head = turn_start_ids(tokenizer, ASSISTANT_ROLE)
        ids += head
        mask += [False] * len(head)
    return ChatTokens(ids=ids, assistant_mask=mask)
