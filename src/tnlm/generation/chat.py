"""Multi-turn chat whose decoding state carries over from turn to turn.

The conversation is kept as the token sequence the model has seen: the first turn's prompt, then each
reply as the model generated it, then the tokens that close the reply and add the next user message.
All of it comes from `tnlm.chat_template.encode_chat` (turn by turn, so this is `encode_chat` of the
conversation with the replies in the model's own tokens rather than re-tokenized): the role markers are
special tokens and message text is plain text, so a user cannot type a turn of another role. Each turn
feeds the model only the tokens its state has not seen: a TransNormer turn costs the new message and
the reply whatever the history, and a Transformer keeps its KV cache instead of rebuilding it. The
state after a turn is exactly what a fresh prefill of `session.tokens` gives.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tnlm.chat_template import END_MARKER, encode_chat, turn_end_ids
from tnlm.generation.engine import GenerationResult, GenerationStats, new_state, stream
from tnlm.generation.sampling import SamplingParams
from tnlm.generation.state import DecodeState
from tnlm.generation.tokenizer import TextTokenizer


def chat_eos_ids(tokenizer: TextTokenizer) -> list[int]:
    """A reply ends at the tokenizer's EOS or at the template's end marker, whichever comes first."""
    ids = [tokenizer.eos_token_id, tokenizer.token_id(END_MARKER)]
    return [i for i in ids if i is not None]


class ChatSession:
    """session.send("Hi") streams the reply and records it. session.messages is the conversation as
    text; session.tokens is the same conversation as the model saw it (no generation prompt)."""

    def __init__(
        self, model: nn.Module, tokenizer: TextTokenizer, *, system: str | None = None, reference: bool = False,
        compile: bool = False,
    ) -> None:  # fmt: skip
        """reference=True decodes with the general forward pass instead of the fast step (same replies);
        compile=True with the fast step compiled (generation/compiled.py)."""
        self.model, self.tokenizer, self.reference, self.compile = model, tokenizer, reference, compile
        self.opening = [{"role": "system", "content": system}] if system else []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages: list[dict[str, str]] = list(self.opening)
        self.tokens: list[int] = []
        self.state: DecodeState | None = None

    def new_state(self) -> DecodeState:
        """A fresh decoding state for this session's model (the fast one unless `reference`)."""
        return new_state(self.model, reference=self.reference, compile=self.compile)

    def send(
        self,
        text: str,
        *,
        max_new_tokens: int = 128,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        result: GenerationResult | None = None,
    ) -> Iterator[str]:
        """Add a user message and stream the assistant's reply; both join the conversation once the
        stream is exhausted (a reply interrupted before that is dropped, and the next turn starts a
        fresh state). Pass an empty GenerationResult as `result` to read tokens and stats."""
        user = {"role": "user", "content": text}
        if self.state is None:  # the first turn, or the one after an interrupted reply
            self.state = self.new_state()
            tokens = encode_chat([*self.messages, user], self.tokenizer, add_generation_prompt=True).ids
        else:
            tokens = self.tokens + encode_chat([user], self.tokenizer, add_generation_prompt=True).ids
        fed = len(self.state.tokens[0]) if self.state.tokens else 0
        prompt = tokens[fed:]  # what the state has not seen: the last reply's end, then this turn
        result = result if result is not None else GenerationResult(sequences=[], stats=GenerationStats())
        done = False
        try:
            yield from stream(
                self.model, self.tokenizer, prompt, max_new_tokens=max_new_tokens, sampling=sampling,
                stop=[END_MARKER], eos_token_ids=chat_eos_ids(self.tokenizer), seed=seed, result=result,
                state=self.state,
            )  # fmt: skip
            done = True
        finally:
            if not done:
                self.state = None
        reply = result.sequences[0]
        # a stop string leaves END_MARKER's tokens in the reply; an EOS or the length limit does not
        closing = turn_end_ids(self.tokenizer, with_marker=reply.finish_reason != "stop")
        self.tokens = tokens + reply.tokens + closing
        self.messages += [user, {"role": "assistant", "content": reply.text}]
