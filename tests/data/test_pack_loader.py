import json

import numpy as np
import pytest
import torch

from tests.helpers.text import english_paragraph
from tnlm.data.document import Document
from tnlm.data.files import DataError, write_documents
from tnlm.data.loader import TokenLoader
from tnlm.data.pack import is_validation, pack, read_split, token_dtype
from tnlm.data.tokenizer import save_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def packed(tmp_path_factory, english_docs_module):
    root = tmp_path_factory.mktemp("pack")
    tok = train_tokenizer(english_docs_module, vocab_size=400, show_progress=False)
    save_tokenizer(tok, root / "tok")
    docs = [Document(text=t, id=f"d{i}") for i, t in enumerate(english_docs_module * 3)]
    write_documents(root / "in" / "a.jsonl", docs[:60])
    write_documents(root / "in" / "b.jsonl.gz", docs[60:])
    meta = pack([str(root / "in")], root / "tok", root / "out", val_fraction=0.1, progress=False)
    return root, tok, docs, meta


@pytest.fixture(scope="module")
def english_docs_module():
    import random

    rng = random.Random(11)
    return [english_paragraph(rng, 5) for _ in range(40)]


def test_pack_writes_documents_with_eos_and_splits(packed):
    root, tok, docs, meta = packed
    assert meta["dtype"] == "uint16" and token_dtype(70_000) == np.uint32
    eos = tok.token_to_id("</s>")
    val_ids = [d.id for d in docs if is_validation(d.id, 0.1)]
    assert 0 < len(val_ids) < len(docs) and meta["splits"]["val"]["documents"] == len(val_ids)
    # the first train document of shard 0 is exactly its tokens followed by EOS
    tokens, ends = next(read_split(root / "out", "train"))
    first = next(d for d in docs[:60] if not is_validation(d.id, 0.1))
    expected = tok.encode(first.text, add_special_tokens=False).ids + [eos]
    assert tokens[: ends[0]].tolist() == expected
    total = sum(int(e[-1]) for _, e in read_split(root / "out", "train"))
    assert total == meta["splits"]["train"]["tokens"] and (tokens[np.asarray(ends) - 1] == eos).all()


def test_pack_resumes_and_checks_inputs(packed, tmp_path):
    root, _, _, meta = packed
    marker = root / "out" / "shard-00001.json"
    marker.unlink()
    assert pack([str(root / "in")], root / "tok", root / "out", val_fraction=0.1, progress=False) == meta
    with pytest.raises(DataError, match="no tokenizer"):
        pack([str(root / "in")], tmp_path, tmp_path / "o", progress=False)


def collect(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_windows_are_the_token_stream_shifted_by_one(packed):
    root = packed[0]
    loader = TokenLoader(root / "out", seq_len=16, batch_size=2, shuffle=False)
    batch = collect(loader, 1)[0]
    tokens, _ = next(read_split(root / "out", "train"))
    assert batch["input_ids"].shape == (2, 16)
    assert batch["input_ids"][0].tolist() == tokens[:16].tolist()
    assert batch["labels"][0].tolist() == tokens[1:17].tolist()
    assert batch["input_ids"][1].tolist() == tokens[16:32].tolist()


def test_resume_continues_at_the_exact_next_batch(packed):
    root = packed[0]
    for mode in ("windows", "varlen"):
        loader = TokenLoader(root / "out", seq_len=16, batch_size=2, mode=mode, seed=5)
        steps = loader.batches_per_epoch() + 3  # cross an epoch boundary
        reference = collect(TokenLoader(root / "out", seq_len=16, batch_size=2, mode=mode, seed=5), steps + 4)
        collect(loader, steps)
        state = json.loads(json.dumps(loader.state_dict()))
        resumed = TokenLoader(root / "out", seq_len=16, batch_size=2, mode=mode, seed=5)
        resumed.load_state_dict(state)
        for expected, got in zip(reference[steps:], collect(resumed, 4)):
            assert torch.equal(expected["input_ids"], got["input_ids"]), mode
        with pytest.raises(DataError, match="same seq_len"):
            TokenLoader(root / "out", seq_len=8, batch_size=2, mode=mode, seed=5).load_state_dict(state)


def test_ranks_get_disjoint_batches(packed):
    root = packed[0]
    seen = []
    for rank in range(2):
        loader = TokenLoader(root / "out", seq_len=16, batch_size=2, rank=rank, world_size=2)
        seen.append({tuple(b["input_ids"].flatten().tolist()) for b in collect(loader, loader.batches_per_epoch())})
    assert seen[0] and not seen[0] & seen[1]


def test_varlen_batches_mark_documents_with_cu_seqlens(packed):
    root, tok, _, _ = packed
    eos = tok.token_to_id("</s>")
    loader = TokenLoader(root / "out", seq_len=64, batch_size=4, mode="varlen", shuffle=False)
    batch = collect(loader, 1)[0]
    cu = batch["cu_seqlens"].tolist()
    assert batch["input_ids"].shape == (1, cu[-1]) and cu[-1] <= 4 * 64 and cu[0] == 0
    assert batch["max_seqlen"] == max(b - a for a, b in zip(cu, cu[1:]))
    labels = batch["labels"][0]
    for a, b in zip(cu, cu[1:]):  # each piece: labels are the inputs shifted; positions restart at 0
        assert batch["position_ids"][0, a].item() == 0
        assert batch["input_ids"][0, a + 1 : b].tolist() == labels[a : b - 1].tolist()
    ends_with_eos = sum(labels[b - 1].item() == eos for b in cu[1:])
    assert ends_with_eos >= 1


def test_loader_errors(packed, tmp_path):
    root = packed[0]
    with pytest.raises(DataError, match="too small"):
        TokenLoader(root / "out", seq_len=100_000, batch_size=8)
    with pytest.raises(DataError, match="meta.json"):
        TokenLoader(tmp_path, seq_len=16, batch_size=2)
    with pytest.raises(DataError, match="mode"):
        TokenLoader(root / "out", seq_len=16, batch_size=2, mode="bucket")
