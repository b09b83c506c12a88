import random

import pytest

from tnlm.data.files import DataError
from tnlm.data.tokenizer import (
    BYTE_TOKENS,
    SPECIAL_TOKENS,
    chars_per_token,
    held_out,
    save_tokenizer,
    split_by_language,
    train_tokenizer,
)

ZH = "子曰：学而时习之，不亦说乎？有朋自远方来，不亦乐乎？人不知而不愠，不亦君子乎？"


@pytest.fixture(scope="module")
def tokenizer():
    rng = random.Random(3)
    words = ["river", "garden", "market", "teacher", "evening", "the", "a", "walked", "painted", "quietly"]
    texts = [" ".join(rng.choice(words) for _ in range(40)) + f" {rng.randint(0, 99999)}." for _ in range(300)]
    return train_tokenizer(texts + [ZH] * 20, vocab_size=600, show_progress=False)


def test_vocabulary_has_specials_then_all_byte_tokens(tokenizer):
    vocab = tokenizer.get_vocab()
    assert tokenizer.get_vocab_size() <= 600
    assert [vocab[t] for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert all(vocab[t] == len(SPECIAL_TOKENS) + i for i, t in enumerate(BYTE_TOKENS))
    assert "river" in vocab or " river" in vocab  # it learned merges


def test_digits_are_single_tokens(tokenizer):
    tokens = tokenizer.encode("in 2024 we paid 31415", add_special_tokens=False).tokens
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == list("202431415")


@pytest.mark.parametrize("text", [
    "plain English with   odd  spacing\tand tabs\n\nand newlines",
    "emoji 😀🎉👩‍👩‍👧 and CJK 子曰学而 and 한국어 and عربى",
    "control \x00\x01\x1b[31m \x7f chars, ▁ metaspace, combining e\u0301, \U0010fffd, \ufeff BOM",
    "  leading and trailing spaces  ",
])
def test_round_trips_arbitrary_unicode(tokenizer, text):
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    assert tokenizer.decode(ids, skip_special_tokens=False) == text
    assert tokenizer.token_to_id("<unk>") not in ids


def test_random_codepoints_round_trip(tokenizer):
    rng = random.Random(0)
    points = [c for c in (rng.randrange(0x110000) for _ in range(2000)) if not 0xD800 <= c <= 0xDFFF]
    text = "".join(map(chr, points))
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False).ids) == text


def test_saved_folder_loads_in_transformers(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    save_tokenizer(tokenizer, tmp_path / "tok")
    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert (hf.bos_token, hf.eos_token, hf.pad_token) == ("<s>", "</s>", "<pad>")
    assert hf.convert_tokens_to_ids("<|im_end|>") == SPECIAL_TOKENS.index("<|im_end|>")
    text = "子曰 😀 x\x00 12"
    assert hf.decode(hf(text)["input_ids"]) == text
    chat = hf.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_chars_per_token_and_language_split(tokenizer):
    en, zh = split_by_language(["the river walked quietly", ZH, "a garden"])
    assert len(en) == 2 and zh == [ZH]
    assert chars_per_token(tokenizer, en) > 2.0  # learned English merges
    train, kept = held_out(iter(str(i) for i in range(40)), every=20)
    assert len(list(train)) == 38 and kept == ["19", "39"]


def test_bad_vocab_size_and_empty_text():
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100, show_progress=False)
    with pytest.raises(DataError, match="empty"):
        train_tokenizer([], vocab_size=1000, show_progress=False)


def test_saving_leaves_other_files_in_the_folder(tokenizer, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.safetensors").write_bytes(b"weights")
    save_tokenizer(tokenizer, tmp_path / "model")
    assert (tmp_path / "model" / "model.safetensors").read_bytes() == b"weights"
    assert (tmp_path / "model" / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind


def test_the_requested_vocabulary_size_is_honoured_on_many_characters():
    """Issue 19.5: a CJK corpus asked for 1000 tokens got 3262; an emoji corpus asked for 264 got 603."""
    rng = random.Random(5)
    cjk = ["".join(chr(0x4E00 + int(rng.paretovariate(0.8)) % 6000) for _ in range(200)) for _ in range(300)]
    emoji = [" ".join("".join(chr(0x1F300 + rng.randrange(600)) for _ in range(3)) for _ in range(50)) for _ in range(100)]
    for texts, size in ((cjk, 1000), (emoji, 264)):
        assert len(set("".join(texts))) > size - len(BYTE_TOKENS)  # more characters than the budget
        tok = train_tokenizer(texts, vocab_size=size, show_progress=False)
        assert tok.get_vocab_size() <= size
        for text in texts[:20]:  # rarer characters go through their bytes
            ids = tok.encode(text, add_special_tokens=False).ids
            assert tok.decode(ids) == text and tok.token_to_id("<unk>") not in ids


def test_an_existing_tokenizer_is_not_overwritten_without_asking(tokenizer, tmp_path):
    """Issue 19.5: an existing --output was overwritten silently."""
    save_tokenizer(tokenizer, tmp_path / "tok")
    before = (tmp_path / "tok" / "tokenizer.json").read_bytes()
    other = train_tokenizer(["completely different text"] * 10, vocab_size=300, show_progress=False)
    with pytest.raises(DataError, match="holds a tokenizer already.*--overwrite"):
        save_tokenizer(other, tmp_path / "tok")
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() == before
    save_tokenizer(other, tmp_path / "tok", overwrite=True)
    assert (tmp_path / "tok" / "tokenizer.json").read_bytes() != before


def test_markers_and_template_come_from_the_chat_template_module(tokenizer, tmp_path):
    """Issue 10.4: the tokenizer trainer takes its chat markers and template from tnlm.chat_template."""
    from transformers import AutoTokenizer

    from tnlm.chat_template import CHAT_TEMPLATE_JINJA, MARKER_TOKENS

    assert set(MARKER_TOKENS) <= set(SPECIAL_TOKENS)
    save_tokenizer(tokenizer, tmp_path / "tok")
    hf = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert hf.chat_template == CHAT_TEMPLATE_JINJA
    assert all(hf.convert_tokens_to_ids(m) == tokenizer.token_to_id(m) for m in MARKER_TOKENS)
