"""Passkey retrieval: prompt length and key depth, retrieval through the real decoding loop with an
oracle model, the table and heat map, lengths beyond the training length."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from torch import nn

from tests.evaluation.conftest import tiny_model
from tnlm.errors import ConfigError
from tnlm.evaluation.model import EvalModel
from tnlm.evaluation.passkey import passkey_prompt, passkey_retrieval, plot_heatmap
from tnlm.evaluation.results import EvalReport, print_report
from tnlm.generation.tokenizer import ByteTokenizer

TOK = ByteTokenizer()


class History:
    def __init__(self) -> None:
        self.tokens: list[int] = []


class OracleLM(nn.Module):
    """Reads everything it was fed (kept in its cache) and answers the pass key question: next
    token = the next byte of " KEY" after the last "The pass key is", then EOS. `wrong` answers a
    different number."""

    def __init__(self, *, wrong: bool = False) -> None:
        super().__init__()
        self.wrong = wrong
        self.dummy = nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(vocab_size=264, model_type="oracle", max_position_embeddings=300)

    def forward(self, input_ids, attention_mask=None, cache=None, use_cache=True, logits_to_keep=0):
        cache = cache or History()
        cache.tokens += input_ids[0].tolist()
        text = TOK.decode(cache.tokens)
        logits = torch.zeros(1, input_ids.shape[1], 264)
        found = re.search(r"The pass key is (\d+)\.", text)
        if found is None or "What is the pass key?" not in text:  # a prefill chunk before the question
            return SimpleNamespace(logits=logits, cache=cache)
        key = found.group(1)
        answer = " " + (str(int(key) + 1) if self.wrong else key)
        said = text.rsplit("The pass key is", 1)[1]
        nxt = TOK.encode(answer[len(said)])[0] if len(said) < len(answer) else TOK.eos_token_id
        logits[0, -1, nxt] = 10.0
        return SimpleNamespace(logits=logits, cache=cache)


def _oracle(wrong: bool = False) -> EvalModel:
    return EvalModel(model=OracleLM(wrong=wrong), tokenizer=TOK, name="oracle")


@pytest.mark.parametrize("depth", [0.0, 0.3, 1.0])
def test_prompt_has_the_asked_length_and_depth(depth: float) -> None:
    model = _oracle()
    ids = passkey_prompt(model, length=1200, depth=depth, key="31415")
    assert len(ids) == 1200
    text = TOK.decode(ids)
    assert text.endswith("What is the pass key? The pass key is") and text.count("31415") == 2
    key_sentence = "The pass key is 31415. Keep 31415 in mind: it is the pass key. "
    body_start, body_end = text.index("\n") + 1, text.rindex("\n") - len(key_sentence)
    where = (text.index(key_sentence) - body_start) / (body_end - body_start)
    assert where == pytest.approx(depth, abs=0.02)


def test_oracle_retrieves_every_key_and_a_wrong_model_none() -> None:
    result = passkey_retrieval(_oracle(), lengths=[400, 250], depths=[0.0, 1.0], trials=3, chunk_size=64, progress=False)
    assert result.lengths == [250, 400] and all(v == 1.0 for v in result.accuracy.values())
    assert all(a["answer"].strip() == a["key"] for a in result.answers)
    wrong = passkey_retrieval(_oracle(wrong=True), lengths=[250], depths=[0.5], trials=2, progress=False)
    assert wrong.accuracy[(250, 0.5)] == 0.0


def test_lengths_beyond_training_are_run_and_flagged(tmp_path, capsys) -> None:
    result = passkey_retrieval(_oracle(), lengths=[250, 400], depths=[0.5], trials=1, progress=False)
    assert result.training_length == 300  # from the model's config
    assert [r["beyond_training_length"] for r in result.rows()] == [False, True]
    png = plot_heatmap(result, tmp_path / "pk" / "heat.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print_report(EvalReport(model="oracle", passkey=result), console=Console(width=200))
    out = capsys.readouterr().out
    assert "training length 300" in out and "400*" in out


def test_real_model_runs_past_its_training_length() -> None:
    model = tiny_model("transformer-tiny", max_position_embeddings=200)
    result = passkey_retrieval(model, lengths=[260], depths=[0.0, 1.0], trials=1, chunk_size=64, progress=False)
    assert result.beyond_training(260) and set(result.accuracy) == {(260, 0.0), (260, 1.0)}
    assert all(0.0 <= v <= 1.0 for v in result.accuracy.values())


def test_bad_passkey_settings() -> None:
    with pytest.raises(ConfigError, match="too short"):
        passkey_prompt(_oracle(), length=20, depth=0.5, key="12345")
    with pytest.raises(ConfigError, match="depth"):
        passkey_prompt(_oracle(), length=500, depth=1.5, key="12345")
    with pytest.raises(ConfigError, match="at least one"):
        passkey_retrieval(_oracle(), lengths=[], depths=[0.5])
