"""Decoding for every tnlm family: sampling, stop strings, streaming, batched generation.

`generate(model, tokenizer, prompts, ...)` returns tokens, text and timing; `stream(...)` yields text
pieces. The model's own cache object is the decoding state (see state.py); both decode with the fast
one-token step (FastDecodeState, fast.py) unless given reference=True (DecodeState, the general forward).
"""

from tnlm.generation.chat import ChatSession, chat_eos_ids
from tnlm.generation.engine import (
    GeneratedSequence,
    GenerationResult,
    GenerationStats,
    generate,
    left_pad,
    new_state,
    stream,
)
from tnlm.generation.fast import FastDecodeState
from tnlm.generation.sampling import SamplingParams
from tnlm.generation.state import DecodeState
from tnlm.generation.tokenizer import ByteTokenizer, HFTokenizer, TextTokenizer, load_tokenizer

__all__ = [
    "ByteTokenizer",
    "ChatSession",
    "DecodeState",
    "FastDecodeState",
    "GeneratedSequence",
    "GenerationResult",
    "GenerationStats",
    "HFTokenizer",
    "SamplingParams",
    "TextTokenizer",
    "chat_eos_ids",
    "generate",
    "left_pad",
    "load_tokenizer",
    "new_state",
    "stream",
]
