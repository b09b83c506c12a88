"""Multi-turn chat whose decoding state carries over from turn to turn.

The conversation is kept as the token sequence the model has seen: the first turn's rendered prompt,
then each reply as the model generated it, then the template text that closes the reply and adds
the next user message (tnlm's chat template renders a conversation turn by turn, so this is the
rendered conversation, with the replies in the model's own tokens rather than re-tokenized). Each turn
feeds the model only the tokens its state has not seen: a TransNormer turn costs the new message and
the reply whatever the history, and a Transformer keeps its KV cache instead of rebuilding it. The
state after a turn is exactly what a fresh prefill of `session.tokens` gives.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from tnlm.chat_template import END_MARKER, render_chat
from tnlm.generation.engine import GenerationResult, GenerationStats, stream
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

    def __init__(self, model: nn.Module, tokenizer: TextTokenizer, *, system: str | None = None) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.opening = [{"role": "system", "content": system}] if system else []
        self.reset()

    def reset(self) -> None:
        """Forget the conversation (the system message stays)."""
        self.messages: list[dict[str, str]] = list(self.opening)
        self.tokens: list[int] = []
        self.state: DecodeState | None = None

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
            self.state = DecodeState(self.model)
            tokens = self.tokenizer.encode(render_chat([*self.messages, user], add_generation_prompt=True))
        else:
            turn = render_chat([user], add_generation_prompt=True)
            tokens = self.tokens + self.tokenizer.encode(turn, add_special_tokens=False)
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
        closing = "\n" if reply.finish_reason == "stop" else END_MARKER + "\n"
        self.tokens = tokens + reply.tokens + self.tokenizer.encode(closing, add_special_tokens=False)
        self.messages += [user, {"role": "assistant", "content": reply.text}]
