"""Every mistake a caller can make with generate()/stream() is a ConfigError that says what to do,
raised before any decoding; a preset's byte tokenizer saves as a Hugging Face tokenizer folder."""

from __future__ import annotations

import json
import random

import pytest

from tests.helpers.models import tiny_model
from tnlm.chat_template import render_chat
from tnlm.errors import CheckpointError, ConfigError
from tnlm.generation import ByteTokenizer, generate, load_tokenizer, stream
from tnlm.generation.tokenizer import tokenizer_from_folder

TOK = ByteTokenizer()


@pytest.mark.parametrize(
    ("prompts", "kwargs", "message"),
    [
        ([], {}, "list of prompts is empty"),
        ("Hello", {}, "one string"),
        (["Hi", ""], {}, "prompt 1 is empty"),
        (["bad \udcff byte"], {}, "not valid UTF-8"),
        ([[5, 99999]], {}, "outside the model's vocabulary"),
        ([[-1, 5]], {}, "outside the model's vocabulary"),
        (["Hi"], {"seed": 2**70}, "seed must be"),
        (["Hi"], {"seed": -1}, "seed must be"),
        (["Hi"], {"seed": 1.5}, "seed must be"),
        (["Hi"], {"prefill_chunk_size": -4}, "prefill_chunk_size"),
        (["Hi"], {"prefill_chunk_size": 0}, "prefill_chunk_size"),
        (["Hi"], {"max_new_tokens": 0}, "max_new_tokens"),
        (["Hi"], {"max_new_tokens": 2.5}, "max_new_tokens"),
        (["Hi"], {"stop": "\n"}, "stop must be a list"),
        (["Hi"], {"stop": [""]}, "stop must be a list of non-empty"),
    ],
)  # fmt: skip
def test_generate_refuses_bad_arguments(prompts, kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        generate(tiny_model("tnl-tiny"), TOK, prompts, max_new_tokens=kwargs.pop("max_new_tokens", 2), **kwargs)


def test_stream_checks_its_options_when_called_not_when_first_read() -> None:
    with pytest.raises(ConfigError, match="seed"):
        stream(tiny_model("tnl-tiny"), TOK, "Hi", seed=2**64)


def test_byte_tokenizer_saved_as_hf_gives_the_same_ids(tmp_path) -> None:
    TOK.save_pretrained(tmp_path)
    hf = load_tokenizer(tmp_path, vocab_size=8192)
    rng = random.Random(0)
    alphabet = "abc XYZ é世界🙂\n\t<|>"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(100)]
    texts.append(render_chat([{"role": "user", "content": "Hi 世界"}], add_generation_prompt=True))
    for text in texts:
        assert hf.encode(text) == TOK.encode(text), text
    assert hf.decode(TOK.encode("héllo 世界🙂")) == "héllo 世界🙂"
    assert (hf.eos_token_id, hf.pad_token_id) == (TOK.eos_token_id, TOK.pad_token_id)


def test_damaged_or_mismatched_tokenizer_folders_are_refused(tmp_path) -> None:
    TOK.save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="has 264 tokens but the model has only 200"):
        tokenizer_from_folder(tmp_path, vocab_size=200)
    data = (tmp_path / "tokenizer.json").read_bytes()
    (tmp_path / "tokenizer.json").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        tokenizer_from_folder(tmp_path, vocab_size=8192)
    (tmp_path / "tokenizer.json").unlink()
    (tmp_path / "tokenizer_config.json").write_text(json.dumps([1, 2]))
    with pytest.raises(CheckpointError, match="cannot be read"):
        tokenizer_from_folder(tmp_path, vocab_size=8192)
    with pytest.raises(CheckpointError, match="does not exist"):
        tokenizer_from_folder(tmp_path / "nope", vocab_size=8192)


def test_byte_tokenizer_decodes_any_id_a_model_can_sample() -> None:
    """The ids between the specials and the bytes are in every model's vocabulary but name nothing: a
    random model samples them, and decoding them must not fail (it failed a whole serving batch)."""
    tok = ByteTokenizer()
    unassigned = list(range(len(tok.SPECIALS), tok.BYTE_OFFSET))
    assert unassigned  # the byte offset leaves room for more markers
    assert tok.decode([*tok.encode("a"), *unassigned, *tok.encode("b"), 4]) == "ab<|im_end|>"
