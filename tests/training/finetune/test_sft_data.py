"""Chat data in (JSON Lines, JSON, Hugging Face datasets, the shipped set), bad dialogues refused with
their location, and batches: packed dialogues give the loss of the same dialogues one by one."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from tests.helpers.models import tiny_model
from tnlm.errors import DataError
from tnlm.generation.tokenizer import ByteTokenizer
from tnlm.training.finetune.dialogues import read_dialogues
from tnlm.training.finetune.loader import ChatLoader, collate_packed, collate_padded
from tnlm.training.finetune.samples import build_samples
from tnlm.training.trainer import next_token_loss

from .conftest import assistant, system, user, write_chats

CHATS = [
    [system("Be brief."), user("What does len do?"), assistant("len(obj, /) -- Return the length.")],
    [user("Hi"), assistant("Hello!"), user("And abs?"), assistant("abs(x, /) -- Absolute value.")],
    [user("Ünïcode ✓"), assistant("fine 🙂")],
]


def test_jsonl_json_gzip_and_hf_datasets_give_the_same_dialogues(tmp_path):
    datasets = pytest.importorskip("datasets")
    write_chats(tmp_path / "a.jsonl", CHATS)
    (tmp_path / "b.json").write_text(json.dumps([{"messages": m} for m in CHATS]))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({"messages": m}) + "\n" for m in CHATS))
    datasets.Dataset.from_list([{"messages": m, "id": i} for i, m in enumerate(CHATS)]).save_to_disk(tmp_path / "ds")
    both = datasets.DatasetDict({"train": datasets.Dataset.from_list([{"conv": m} for m in CHATS])})
    both.save_to_disk(tmp_path / "dd")
    expected = [tuple(m) for m in CHATS]
    for path, kw in [("a.jsonl", {}), ("b.json", {}), ("c.jsonl.gz", {}), ("ds", {}), ("dd", {"column": "conv"})]:
        got = read_dialogues(str(tmp_path / path), **kw)
        assert [d.messages for d in got] == expected, path
    assert read_dialogues(str(tmp_path / "a.jsonl"))[1].where == f"{tmp_path / 'a.jsonl'}:2"
    with pytest.raises(DataError, match="splits train, not 'test'"):
        read_dialogues(str(tmp_path / "dd"), column="conv", split="test")


def test_the_shipped_chat_set_is_small_and_every_answer_has_the_format():
    dialogues = read_dialogues("builtin:pydoc-chat")
    assert 200 <= len(dialogues) <= 400
    answers = [m["content"] for d in dialogues for m in d.messages if m["role"] == "assistant"]
    formatted = [a for a in answers if " -- " in a and "(" in a.split(" -- ")[0]]
    assert len(formatted) >= 0.9 * len(answers)
    assert sum(len(d.messages) > 2 for d in dialogues) > 50  # multi-turn dialogues
    assert any(d.messages[0]["role"] == "system" for d in dialogues)


@pytest.mark.parametrize(
    "line, error",
    [
        ('{"messages": [{"role": "bot", "content": "x"}]}', r"a\.jsonl:2: message 0 has role 'bot'; use one of system, user, assistant"),
        ('{"messages": []}', r"a\.jsonl:2: the dialogue is empty"),
        ('{"messages": [{"role": "user", "content": "q"}]}', r"a\.jsonl:2: the dialogue has no assistant message"),
        ('{"messages": [{"role": "user", "content": 3}]}', r"message 0 \(user\) needs a string content"),
        ('{"text": "x"}', r"a\.jsonl:2 has no 'messages' list of messages \(its keys: text\); set data.column"),
        ('{"messages": [{"from": "human", "value": "x"}]}', r"ShareGPT-style"),
        ('{"messages": [', r"a\.jsonl:2 is not valid JSON"),
    ],
    ids=["unknown-role", "empty", "no-assistant", "content-not-text", "no-column", "sharegpt", "bad-json"],
)
def test_bad_dialogues_are_refused_with_their_location(tmp_path, line, error):
    good = json.dumps({"messages": CHATS[0]})
    (tmp_path / "a.jsonl").write_text(f"{good}\n{line}\n")
    with pytest.raises(DataError, match=error):
        read_dialogues(str(tmp_path / "a.jsonl"))


def test_missing_and_empty_inputs_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_dialogues(str(tmp_path / "nope.jsonl"))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="holds no dialogues"):
        read_dialogues(str(tmp_path / "empty.jsonl"))
    with pytest.raises(DataError, match="unknown built-in chat set 'x'; tnlm ships: pydoc-chat"):
        read_dialogues("builtin:x")


def pydoc_samples(*, seq_len: int):
    """Samples of the shipped set's first six dialogues (byte tokens: 1 to 3 samples each)."""
    samples, _ = build_samples(read_dialogues("builtin:pydoc-chat")[:6], ByteTokenizer(), seq_len=seq_len)
    return samples


def test_packed_dialogues_give_the_same_loss_as_one_by_one():
    """TransNormer is the family that takes cu_seqlens (the others pad: the test below)."""
    model = tiny_model("tnl-tiny")
    samples = pydoc_samples(seq_len=200)
    with torch.no_grad():
        packed = next_token_loss(model, collate_packed(samples)).item()
        alone = sum(next_token_loss(model, collate_packed([s])).item() for s in samples)
    assert abs(packed - alone) / alone < 1e-5
    batch = collate_packed(samples)
    assert batch["input_ids"].shape == (1, sum(len(s.input_ids) for s in samples))
    assert batch["cu_seqlens"].tolist()[-1] == batch["input_ids"].shape[1]


@pytest.mark.parametrize("preset", ["tnl-tiny", "transformer-tiny", "infini-tiny"])
def test_padded_rows_give_the_same_loss_as_one_by_one(preset):
    model = tiny_model(preset)
    samples = pydoc_samples(seq_len=200)
    with torch.no_grad():
        padded = next_token_loss(model, collate_padded(samples, pad_id=0)).item()
        alone = sum(next_token_loss(model, collate_padded([s], pad_id=0)).item() for s in samples)
    assert abs(padded - alone) / alone < 1e-5


def test_the_loader_packs_within_the_budget_and_resumes_at_the_same_batch():
    samples = pydoc_samples(seq_len=64)
    loader = ChatLoader(samples, seq_len=64, batch_size=2, packed=True, pad_id=0, seed=3)
    it = iter(loader)
    first = [next(it) for _ in range(loader.batches_per_epoch() + 2)]  # into the second epoch
    assert all(b["input_ids"].shape[1] <= 128 for b in first)
    state = loader.state_dict()
    expected = next(it)
    again = ChatLoader(samples, seq_len=64, batch_size=2, packed=True, pad_id=0, seed=3)
    again.load_state_dict(state)
    got = next(iter(again))
    assert all(torch.equal(got[k], expected[k]) for k in ("input_ids", "labels", "cu_seqlens", "position_ids"))
    n_epoch = sum(int(b["cu_seqlens"].numel() - 1) for b in first[: loader.batches_per_epoch()])
    assert n_epoch == len(samples)  # an epoch uses every sample once
    with pytest.raises(DataError, match="resume with the same data"):
        ChatLoader(samples, seq_len=64, batch_size=3, packed=True, pad_id=0, seed=3).load_state_dict(state)


def test_padded_batches_hold_batch_size_rows_padded_with_ignored_labels():
    samples = pydoc_samples(seq_len=64)
    batch = next(iter(ChatLoader(samples, seq_len=64, batch_size=3, packed=False, pad_id=7, shuffle=False)))
    lengths = [len(s.input_ids) for s in samples[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    for row, n in enumerate(lengths):
        assert (batch["input_ids"][row, n:] == 7).all() and (batch["labels"][row, n:] == -100).all()
        assert torch.equal(batch["input_ids"][row, :n], torch.from_numpy(samples[row].input_ids))
