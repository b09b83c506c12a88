"""The chat template (one definition, Jinja twin), the byte tokenizer, and `tnlm generate` / `tnlm chat`."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tnlm.chat_template import CHAT_TEMPLATE_JINJA, END_MARKER, MARKER_TOKENS, render_chat
from tnlm.cli.main import app
from tnlm.errors import ConfigError
from tnlm.generation import ByteTokenizer, load_tokenizer

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! 🙂"},
    {"role": "user", "content": "Bye\nnow"},
]


def _hf_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<unk>", "</s>", *MARKER_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    tok.train_from_iterator(["hello world, héllo 世界 🙂 " * 20, "the quick brown fox " * 20], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>", chat_template=CHAT_TEMPLATE_JINJA
    )


def test_render_chat_layout() -> None:
    text = render_chat(CONVERSATION[:2], add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    )
    with pytest.raises(ConfigError, match="role"):
        render_chat([{"role": "robot", "content": "x"}])


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_jinja_template_renders_the_same_text(add_generation_prompt: bool) -> None:
    hf = _hf_tokenizer()
    ours = render_chat(CONVERSATION, add_generation_prompt=add_generation_prompt)
    theirs = hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert theirs == ours


def test_byte_tokenizer_round_trips_text_and_markers() -> None:
    tok = ByteTokenizer()
    text = render_chat(CONVERSATION, add_generation_prompt=True)
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids.count(tok.token_id(END_MARKER)) == 4
    assert max(ids) < tok.vocab_size


def test_cli_generate_streams_and_reports_speed() -> None:
    result = CliRunner().invoke(app, ["generate", "tnl-tiny", "--prompt", "hi", "-n", "6"])
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.output


def test_cli_chat_takes_turns_until_exit() -> None:
    args = ["chat", "tnl-tiny", "-n", "4", "--system", "Be brief."]
    result = CliRunner().invoke(app, args, input="hello\n/reset\nagain\n/exit\n")
    assert result.exit_code == 0, result.output
    assert result.output.count("assistant> ") == 2


def test_model_directory_brings_its_own_tokenizer(tmp_path) -> None:
    from tests.helpers.models import tiny_model

    tiny_model("tnl-tiny").save_pretrained(tmp_path)
    with pytest.raises(Exception, match="no tokenizer"):
        load_tokenizer(tmp_path, vocab_size=8192)
    _hf_tokenizer().save_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path, vocab_size=8192)
    assert tok.decode(tok.encode("héllo 世界")) == "héllo 世界"
    result = CliRunner().invoke(app, ["generate", str(tmp_path), "--prompt", "hello", "-n", "5"])
    assert result.exit_code == 0, result.output
