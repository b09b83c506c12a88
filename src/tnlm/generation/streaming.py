"""Turning a growing list of token ids into text pieces, one sequence at a time.

A piece is released only when it ends on a whole character (a token may carry half of a UTF-8
character; the decoder then shows U+FFFD at the end) and cannot be the start of a stop string.
Decoding uses a sliding window of tokens, so each step costs the same however long the text is.
"""

from __future__ import annotations

from collections.abc import Sequence

from tnlm.generation.tokenizer import TextTokenizer

INCOMPLETE = "\ufffd"
# tokens kept before the read offset so that decoding a window starts the way the full text does
_CONTEXT_TOKENS = 6
# a UTF-8 character has at most 4 bytes, so (with byte-level tokens) it spans at most 4 tokens
_MAX_CHAR_TOKENS = 4


class IncrementalDetokenizer:
    """push(token) -> the new complete text (possibly ""); flush() -> whatever is left at the end."""

    def __init__(self, tokenizer: TextTokenizer) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix_offset = 0  # window start
        self.read_offset = 0  # tokens before this are already released as text

    def push(self, token: int) -> str:
        self.ids.append(token)
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        if len(new_text) <= len(prefix_text):
            return ""
        end = len(self.ids)
        if new_text.endswith(INCOMPLETE):
            end = self._final_cut(new_text)
            if end is None:
                return ""
            new_text = new_text[:-1]
        self.read_offset = end
        self.prefix_offset = max(0, self.read_offset - _CONTEXT_TOKENS)
        return new_text[len(prefix_text) :]

    def _final_cut(self, new_text: str) -> int | None:
        """Text ending in U+FFFD is held back while the last character may still be completing. Once
        more tokens are pending than a character can span, the U+FFFDs before the last one are
        invalid bytes, not a character in progress (a model can emit those): the tokens that decode
        to exactly the text before the last U+FFFD are released, so the stream never stalls."""
        pending = len(self.ids) - self.read_offset
        if pending < _MAX_CHAR_TOKENS:
            return None
        for cut in range(len(self.ids) - 1, max(self.read_offset, len(self.ids) - 2 * _MAX_CHAR_TOKENS), -1):
            if self.tokenizer.decode(self.ids[self.prefix_offset : cut]) == new_text[:-1]:
                return cut
        return None

    def flush(self) -> str:
        prefix_text = self.tokenizer.decode(self.ids[self.prefix_offset : self.read_offset])
        new_text = self.tokenizer.decode(self.ids[self.prefix_offset :])
        self.read_offset = len(self.ids)
        return new_text[len(prefix_text) :]


class TextStream:
    """The text of one generated sequence: released pieces, stop-string detection and hold-back."""

    def __init__(self, tokenizer: TextTokenizer, *, stop: Sequence[str] = ()) -> None:
        self.detok = IncrementalDetokenizer(tokenizer)
        self.stop = [s for s in stop if s]
        self.pending = ""  # complete text not yet released (could be the start of a stop string)
        self.released: list[str] = []
        self.stopped = False

    @property
    def text(self) -> str:
        return "".join(self.released)

    def push(self, token: int) -> str:
        """Add a token; returns the text released now. Sets `stopped` when a stop string appears."""
        return self._advance(self.detok.push(token), final=False)

    def finish(self) -> str:
        """End of generation: release everything that is left (up to a stop string)."""
        return self._advance(self.detok.flush(), final=True) if not self.stopped else ""

    def _advance(self, new: str, *, final: bool) -> str:
        self.pending += new
        cut = self._stop_index()
        if cut is not None:
            self.pending, self.stopped = self.pending[:cut], True
        keep = 0 if final or self.stopped else self._holdback()
        piece = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(piece) :]
        if piece:
            self.released.append(piece)
        return piece

    def _stop_index(self) -> int | None:
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _holdback(self) -> int:
        """Length of the longest end of `pending` that begins some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), best, -1):
                if self.pending.endswith(s[:n]):
                    best = n
                    break
        return best
