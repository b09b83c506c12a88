"""Streamed chunks built from a template (service.PieceJson) are the chunks the response models make."""

from __future__ import annotations

import json
import random

import pytest

from tnlm.serving import schemas as S
from tnlm.serving.service import PieceJson

TEXTS = ["", "a", 'quote " and back\\slash', "new\nline\r\ttab", "\x00\x1f\x7f controls", "héllo 系统 🙂",
         "\ufffd", "@@tnlm-piece@@", "\u2028\u2029\x85", "</s> <|im_end|>"]  # fmt: skip


def _chat(index: int, text: str) -> str:
    choice = S.ChatChunkChoice(index=index, delta=S.Delta(content=text))
    return S.ChatCompletionChunk(id="chatcmpl-1", created=7, model="m", choices=[choice]).model_dump_json()


def _completion(index: int, text: str) -> str:
    choice = S.CompletionChoice(index=index, text=text, finish_reason=None)
    return S.Completion(id="cmpl-1", created=7, model="m", choices=[choice]).model_dump_json()


@pytest.mark.parametrize("render", [_chat, _completion], ids=["chat", "completion"])
def test_templated_chunks_equal_the_models_chunks(render) -> None:
    rng = random.Random(0)
    piece = PieceJson(render)
    texts = TEXTS + ["".join(rng.choice(TEXTS) for _ in range(3)) for _ in range(30)]
    for i, text in enumerate(texts):
        index = i % 3
        assert json.loads(piece(index, text)) == json.loads(render(index, text)), text


def test_a_template_without_the_text_is_refused() -> None:
    with pytest.raises(ValueError, match="exactly once"):
        PieceJson(lambda index, text: "{}")(0, "x")
