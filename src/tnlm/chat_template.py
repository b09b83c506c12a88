"""tnlm's chat template, defined once: the SFT trainer trains with it, the tokenizer trainer reserves its
marker tokens, and `tnlm chat` / the server render prompts with it.

A conversation renders as (ChatML-style markers; every turn ends with a newline):

    <|im_start|>system
    You are helpful.<|im_end|>
    <|im_start|>user
    Hi!<|im_end|>
    <|im_start|>assistant
    Hello.<|im_end|>

With `add_generation_prompt=True` the text ends with "<|im_start|>assistant\\n" and the model writes the
reply; it ends the reply with END_MARKER, which generation treats as a stop token.

>>> render_chat([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
'<|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tnlm.errors import ConfigError

START_MARKER = "<|im_start|>"
END_MARKER = "<|im_end|>"
# tokenizers must hold these as single special tokens
MARKER_TOKENS: tuple[str, ...] = (START_MARKER, END_MARKER)
ROLES: tuple[str, ...] = ("system", "user", "assistant")
ASSISTANT_ROLE = "assistant"
GENERATION_PROMPT = f"{START_MARKER}{ASSISTANT_ROLE}\n"

# The same template for Hugging Face tokenizers (`tokenizer.chat_template = CHAT_TEMPLATE_JINJA`);
# tests check that `apply_chat_template` and `render_chat` give identical text.
CHAT_TEMPLATE_JINJA = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


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
    """The prompt text of a conversation (a list of {"role", "content"} dicts)."""
    turns = [render_turn(*_check_message(m, i)) for i, m in enumerate(messages)]
    return "".join(turns) + (GENERATION_PROMPT if add_generation_prompt else "")


def assistant_spans(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans [start, end) an answer-only SFT loss trains on:
    each assistant reply's content plus its END_MARKER (so the model learns to stop)."""
    text, spans = "", []
    for i, message in enumerate(messages):
        role, content = _check_message(message, i)
        head = f"{START_MARKER}{role}\n"
        if role == ASSISTANT_ROLE:
            start = len(text) + len(head)
            spans.append((start, start + len(content) + len(END_MARKER)))
        text += render_turn(role, content)
    return text, spans
