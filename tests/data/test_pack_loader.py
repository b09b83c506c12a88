import json

import numpy as np
import pytest
import torch

from tests.helpers.text import english_paragraph
from tnlm.data.document import Document
from tnlm.data.files import DataError, write_documents
from tnlm.data.loader import TokenLoader
from tnlm.data.pack import is_validation, pack, read_split, token_dtype
from tnlm.data.paths import PACK_MARKER
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


def test_pack_into_a_folder_left_by_a_run_killed_while_writing_its_marker(packed, tmp_path):
    root, _, _, meta = packed
    out = tmp_path / "out"
    out.mkdir()
    (out / f".{PACK_MARKER}.k1ll.tmp").write_text("{")  # SIGKILL between the write and the rename
    assert pack([str(root / "in")], root / "tok", out, val_fraction=0.1, progress=False)["splits"] == meta["splits"]
    assert not list(out.glob(".*.tmp"))


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


def _pack_inputs(root):
    return [str(root / "in")]


def test_pack_refuses_another_tokenizer_and_overwrite_starts_fresh(packed, tmp_path, english_docs_module):
    """Issue 19.4: a rerun with another tokenizer kept the old shards and rewrote meta.json."""
    root = packed[0]
    other = train_tokenizer([t.upper() for t in english_docs_module], vocab_size=320, show_progress=False)
    save_tokenizer(other, tmp_path / "tok2")
    pack(_pack_inputs(root), root / "tok", tmp_path / "out", val_fraction=0.1, progress=False)
    (tmp_path / "out" / "shard-00001.json").unlink()  # an interrupted run, resumed with the other tokenizer
    with pytest.raises(DataError, match="another tokenizer.*--overwrite"):
        pack(_pack_inputs(root), tmp_path / "tok2", tmp_path / "out", val_fraction=0.1, progress=False)
    with pytest.raises(DataError, match="val_fraction"):
        pack(_pack_inputs(root), root / "tok", tmp_path / "out", val_fraction=0.2, progress=False)
    meta = pack(_pack_inputs(root), tmp_path / "tok2", tmp_path / "out", val_fraction=0.1, progress=False, overwrite=True)
    assert meta["vocab_size"] == other.get_vocab_size()
    for tokens, _ in read_split(tmp_path / "out", "train"):  # every shard re-tokenized with the new one
        assert int(tokens.max()) < other.get_vocab_size()
    first = next(read_split(tmp_path / "out", "train"))[0]
    text = next(d for d in packed[2][:60] if not is_validation(d.id, 0.1)).text
    ids = other.encode(text, add_special_tokens=False).ids
    assert first[: len(ids)].tolist() == ids


def test_the_token_dtype_follows_the_largest_id_not_the_vocabulary_count(tmp_path):
    """Issue 19.4: five entries with ids up to 70,000 were stored as uint16 and wrapped."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    sparse = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "hello": 1, "world": 69_999, "</s>": 70_000}, unk_token="<unk>"))
    sparse.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    (tmp_path / "tok").mkdir()
    sparse.save(str(tmp_path / "tok" / "tokenizer.json"))
    write_documents(tmp_path / "in" / "a.jsonl", [Document(text="hello world", id=str(i)) for i in range(20)])
    meta = pack([str(tmp_path / "in")], tmp_path / "tok", tmp_path / "out", val_fraction=0.0, progress=False)
    assert meta["dtype"] == "uint32" and meta["vocab_size"] == 70_001
    tokens, ends = next(read_split(tmp_path / "out", "train"))
    assert tokens[:3].tolist() == [1, 69_999, 70_000] and len(ends) == 20


def test_the_loader_refuses_shards_that_disagree_with_meta(packed, tmp_path):
    """Issue 19.4: shards of another tokenizer (larger ids, another dtype) read as garbage ids."""
    import shutil

    shutil.copytree(packed[0] / "out", tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    small = {**meta, "vocab_size": 100}
    (tmp_path / "out" / "meta.json").write_text(json.dumps(small))
    with pytest.raises(DataError, match=r"train-00000 holds token ids up to \d+, .*vocab_size 100"):
        TokenLoader(tmp_path / "out", seq_len=16, batch_size=2)
    (tmp_path / "out" / "meta.json").write_text(json.dumps({**meta, "dtype": "uint32"}))
    with pytest.raises(DataError, match="train-00000.bin holds .* bytes"):
        TokenLoader(tmp_path / "out", seq_len=16, batch_size=2)


def test_a_validation_fraction_that_leaves_no_training_tokens_is_named(packed, tmp_path):
    root, *_ = packed
    with pytest.raises(DataError, match="below 1"):
        pack([str(root / "in")], root / "tok", tmp_path / "a", val_fraction=1.0, progress=False)
    with pytest.raises(DataError, match="documents went to the validation split: lower --val-fraction"):
        pack([str(root / "in")], root / "tok", tmp_path / "b", val_fraction=0.9999999, progress=False)
