"""Perplexity: one streaming pass equals the full forward; windows equal a brute-force reference;
document sources; bad input."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from tests.evaluation.conftest import TINY_PRESETS, tiny_model
from tnlm.errors import ConfigError
from tnlm.evaluation.perplexity import Document, PerplexityResult, document_nll, perplexity, rolling_windows
from tnlm.evaluation.sources import read_documents

DOCS = [[random.Random(n).randrange(3, 260) for _ in range(n)] for n in (1, 37, 130, 5, 201)]


@torch.no_grad()
def _full_forward_nll(model, doc: list[int]) -> float:
    inp = torch.tensor([[model.prefix_token_id] + doc[:-1]])
    logp = torch.log_softmax(model.model(inp).logits[0].float(), -1)
    return -logp.gather(-1, torch.tensor(doc)[:, None]).sum().item()


@pytest.mark.parametrize("name", TINY_PRESETS)
def test_streaming_pass_equals_the_full_forward(name: str) -> None:
    model = tiny_model(name)
    expected = [_full_forward_nll(model, d) for d in DOCS]
    for chunk, batch in ((17, 2), (64, 5), (1000, 1)):
        got = document_nll(model, DOCS, mode="stream", chunk_size=chunk, batch_size=batch)
        assert got == pytest.approx(expected, rel=1e-5), (chunk, batch)


def test_default_mode_streams_for_state_families_only() -> None:
    assert tiny_model("tnl-tiny").streaming and tiny_model("infini-tiny").streaming
    assert not tiny_model("transformer-tiny").streaming
    r = perplexity(tiny_model("tnl-tiny"), [Document(text="hello world " * 20)], progress=False)
    assert r.mode == "stream" and "streaming pass" in r.describe()
    r = perplexity(tiny_model("transformer-tiny"), [Document(text="hello world " * 20)], progress=False)
    assert r.mode == "window" and r.window == 2048 and r.stride == 2048


@torch.no_grad()
def test_windows_equal_a_brute_force_reference() -> None:
    model = tiny_model("transformer-tiny")
    doc, W = DOCS[-1], 24
    # stride 1: after the first window, token i is predicted from exactly the W tokens before it
    first = torch.log_softmax(model.model(torch.tensor([[model.prefix_token_id] + doc[: W - 1]])).logits[0], -1)
    expected = -first.gather(-1, torch.tensor(doc[:W])[:, None]).sum().item()
    for i in range(W, len(doc)):
        logits = model.model(torch.tensor([doc[i - W : i]])).logits[0, -1]
        expected -= torch.log_softmax(logits, -1)[doc[i]].item()
    got = document_nll(model, [doc], mode="window", window=W, stride=1, batch_size=16)[0]
    assert got == pytest.approx(expected, rel=1e-5)
    # a window longer than the document is the full forward
    assert document_nll(model, [doc], mode="window", window=256)[0] == pytest.approx(_full_forward_nll(model, doc), rel=1e-5)


@pytest.mark.parametrize("n,window,stride", [(1, 4, 4), (10, 4, 4), (10, 4, 1), (23, 7, 3), (7, 7, 7), (50, 16, 5)])
def test_rolling_windows_score_every_token_once(n: int, window: int, stride: int) -> None:
    tokens = list(range(100, 100 + n))
    windows = rolling_windows(tokens, prefix=1, window=window, stride=stride)
    assert [t for _, tgt in windows for t in tgt] == tokens
    for inp, tgt in windows:
        assert len(inp) <= window and len(tgt) <= len(inp)
        stream = [1] + tokens  # position p of `stream` predicts tokens[p]
        start = stream.index(inp[0]) if inp[0] != 1 else 0
        assert stream[start : start + len(inp)] == inp
        assert tokens[start + len(inp) - len(tgt) : start + len(inp)] == tgt


def test_bits_per_byte_definitions() -> None:
    r = PerplexityResult(nll=100.0, tokens=50, bytes=200, words=40, documents=1, mode="stream")
    assert r.bits_per_byte == pytest.approx(100 / 200 / math.log(2))
    assert r.token_perplexity == pytest.approx(math.exp(2.0))
    assert r.byte_perplexity == pytest.approx(math.exp(0.5)) and r.word_perplexity == pytest.approx(math.exp(2.5))


def test_text_jsonl_and_dataset_sources(tmp_path) -> None:
    (tmp_path / "a.txt").write_text("first story<|endoftext|>second story<|endoftext|>\n")
    docs = list(read_documents(tmp_path / "a.txt", separator="<|endoftext|>"))
    assert [d.text for d in docs] == ["first story", "second story"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"content": "héllo"}) + "\n\n" + json.dumps({"content": "x"}) + "\n")
    assert [d.text for d in read_documents(tmp_path / "b.jsonl", text_key="content")] == ["héllo", "x"]
    with pytest.raises(ConfigError, match="no 'text' field"):
        list(read_documents(tmp_path / "b.jsonl"))
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["one", "two"]}).save_to_disk(str(tmp_path / "ds"))
    assert [d.text for d in read_documents(tmp_path / "ds")] == ["one", "two"]
    r = perplexity(tiny_model("tnl-tiny"), read_documents(tmp_path / "b.jsonl", text_key="content"), progress=False)
    assert r.documents == 2 and r.bytes == len("héllo".encode()) + 1 and r.tokens == 7  # byte tokenizer


def test_token_shards(tmp_path) -> None:
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from tnlm.data.pack import pack

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(["the cat sat on the mat"] * 20, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>", "</s>"]))
    tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": f"the cat sat {i}"}) + "\n" for i in range(30)))
    pack([str(tmp_path / "docs.jsonl")], tmp_path / "tokenizer.json", tmp_path / "packed", val_fraction=0.5, progress=False)
    docs = list(read_documents(tmp_path / "packed", split="val"))
    assert docs and all(d.ids and d.ids[-1] == tok.token_to_id("</s>") for d in docs)
    model = tiny_model("tnl-tiny")
    nll = document_nll(model, [d.ids for d in docs], mode="stream")
    assert nll == pytest.approx([_full_forward_nll(model, d.ids) for d in docs], rel=1e-5)


def test_bad_input_is_refused(tmp_path) -> None:
    tnl, tf = tiny_model("tnl-tiny"), tiny_model("transformer-tiny")
    with pytest.raises(ConfigError, match="does not exist"):
        read_documents(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="no window or stride"):
        document_nll(tnl, DOCS, mode="stream", window=8)
    with pytest.raises(ConfigError, match="exceeds the model's maximum context"):
        document_nll(tf, DOCS, mode="window", window=4096)
    with pytest.raises(ConfigError, match="stride"):
        document_nll(tf, DOCS, mode="window", window=16, stride=32)
    with pytest.raises(ConfigError, match="outside the model's vocabulary"):
        document_nll(tnl, [[1, 2, 99999]])
    with pytest.raises(ConfigError, match="no documents"):
        perplexity(tnl, [Document(text="")], progress=False)
