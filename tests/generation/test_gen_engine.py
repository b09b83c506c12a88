"""generate() and stream(): batching, seeds, repeated calls, stop strings, EOS, streaming text."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import ScriptedLM, tiny_model
from tnlm.errors import ConfigError
from tnlm.generation import ByteTokenizer, GenerationResult, GenerationStats, SamplingParams, generate, stream

TOK = ByteTokenizer()
PROMPTS = ["The quick brown fox", "Hi", "Once upon a time, in a land"]
SAMPLING = SamplingParams(temperature=1.0, top_k=40, top_p=0.95, repetition_penalty=1.1)


def _tokens(result: GenerationResult) -> list[list[int]]:
    return [s.tokens for s in result.sequences]


@torch.no_grad()
def test_greedy_matches_argmax_of_full_forward() -> None:
    """The engine's greedy tokens equal a cache-free loop of full forward passes."""
    model = tiny_model("tnl-tiny")
    ids = TOK.encode(PROMPTS[0])
    out = generate(model, TOK, [PROMPTS[0]], max_new_tokens=12, eos_token_ids=[])
    for _ in range(12):
        ids.append(int(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    assert out.sequences[0].tokens == ids[-12:]


def test_batch_equals_single(family_model) -> None:
    batch = generate(family_model, TOK, PROMPTS, max_new_tokens=16, eos_token_ids=[])
    singles = [generate(family_model, TOK, [p], max_new_tokens=16, eos_token_ids=[]) for p in PROMPTS]
    assert _tokens(batch) == [s.sequences[0].tokens for s in singles]


def test_seeded_sampling_is_reproducible_and_batch_independent() -> None:
    model = tiny_model("tnl-tiny")
    a = generate(model, TOK, PROMPTS, max_new_tokens=16, sampling=SAMPLING, seed=7, eos_token_ids=[])
    b = generate(model, TOK, PROMPTS, max_new_tokens=16, sampling=SAMPLING, seed=7, eos_token_ids=[])
    c = generate(model, TOK, PROMPTS, max_new_tokens=16, sampling=SAMPLING, seed=8, eos_token_ids=[])
    alone = generate(model, TOK, PROMPTS[:1], max_new_tokens=16, sampling=SAMPLING, seed=7, eos_token_ids=[])
    assert _tokens(a) == _tokens(b)
    assert _tokens(a) != _tokens(c)
    assert _tokens(alone)[0] == _tokens(a)[0]


def test_repeated_calls_are_independent(family_model) -> None:
    """No state survives a call (the official code kept a stale LRPE offset between calls)."""
    first = generate(family_model, TOK, [PROMPTS[0]], max_new_tokens=12, eos_token_ids=[])
    again = generate(family_model, TOK, [PROMPTS[0]], max_new_tokens=12, eos_token_ids=[])
    generate(family_model, TOK, [PROMPTS[2]], max_new_tokens=30, eos_token_ids=[])
    after_other = generate(family_model, TOK, [PROMPTS[0]], max_new_tokens=12, eos_token_ids=[])
    assert _tokens(first) == _tokens(again) == _tokens(after_other)


def _scripted(text: str) -> ScriptedLM:
    return ScriptedLM(TOK.encode(text) + [TOK.eos_token_id])


@pytest.mark.parametrize(
    ("text", "stop", "expected"),
    [
        ("Hello world. Bye", ["world"], "Hello "),
        ("a wa wonder world!", ["world"], "a wa wonder "),  # false starts are released later, not lost
        ("x: 1\nx: 2\n", ["\n", "2"], "x: 1"),  # the earliest of several stop strings wins
        ("no stop here", ["zzz"], "no stop here"),
    ],
)
def test_stop_strings(text: str, stop: list[str], expected: str) -> None:
    model = _scripted(text)
    out = generate(model, TOK, ["p"], max_new_tokens=100, stop=stop)
    assert out.sequences[0].text == expected
    assert out.sequences[0].finish_reason == ("stop" if expected != text else "eos")
    assert "".join(stream(model, TOK, "p", max_new_tokens=100, stop=stop)) == expected


def test_eos_and_max_new_tokens() -> None:
    model = _scripted("abc")
    done = generate(model, TOK, ["p"], max_new_tokens=100).sequences[0]
    assert (done.text, done.finish_reason, done.tokens) == ("abc", "eos", TOK.encode("abc"))
    cut = generate(model, TOK, ["p"], max_new_tokens=2).sequences[0]
    assert (cut.text, cut.finish_reason, len(cut.tokens)) == ("ab", "length", 2)
    ignore_eos = generate(model, TOK, ["p"], max_new_tokens=6, eos_token_ids=[]).sequences[0]
    assert ignore_eos.finish_reason == "length" and len(ignore_eos.tokens) == 6


def test_stream_never_splits_a_character() -> None:
    text = "héllo 🙂 世界 ok ☃"
    model = _scripted(text)
    pieces = list(stream(model, TOK, "p", max_new_tokens=100))
    assert "".join(pieces) == text
    assert len(pieces) > 5
    assert all("\ufffd" not in p and p for p in pieces)


def test_stream_reassembles_generate_text_of_a_real_model() -> None:
    model = tiny_model("tnl-tiny")
    result = GenerationResult(sequences=[], stats=GenerationStats())
    pieces = list(stream(model, TOK, PROMPTS[0], max_new_tokens=40, sampling=SAMPLING, seed=3, result=result))
    full = generate(model, TOK, [PROMPTS[0]], max_new_tokens=40, sampling=SAMPLING, seed=3)
    assert "".join(pieces) == full.sequences[0].text == result.sequences[0].text
    assert result.sequences[0].tokens == full.sequences[0].tokens
    seq = result.sequences[0]
    assert result.stats.generated_tokens == len(seq.tokens) + (seq.finish_reason == "eos")


def test_stats_and_errors() -> None:
    model = tiny_model("tnl-tiny")
    out = generate(model, TOK, PROMPTS[:2], max_new_tokens=5, eos_token_ids=[])
    assert out.stats.prompt_tokens == sum(len(TOK.encode(p)) for p in PROMPTS[:2])
    assert out.stats.generated_tokens == 10 and out.stats.state_bytes > 0
    with pytest.raises(ConfigError, match="empty"):
        generate(model, TOK, [""], max_new_tokens=5)
    with pytest.raises(ConfigError, match="max_new_tokens"):
        generate(model, TOK, ["x"], max_new_tokens=0)


def test_prompt_longer_than_the_model_allows_is_refused_before_any_work() -> None:
    model = tiny_model("transformer-tiny")
    limit = model.config.max_position_embeddings
    with pytest.raises(ConfigError, match="max_position_embeddings"):
        generate(model, TOK, [[9] * (limit - 5)], max_new_tokens=10)


def test_repetition_penalty_counts_prompt_tokens_but_not_padding() -> None:
    """With a huge penalty, a scripted model that wants to repeat a prompt token is overridden."""
    model = ScriptedLM([TOK.encode("a")[0]] * 4, vocab_size=TOK.vocab_size)
    strong = SamplingParams(repetition_penalty=1e9)
    out = generate(model, TOK, ["a", "bbbbbb"], max_new_tokens=1, sampling=strong, eos_token_ids=[])
    assert out.sequences[0].tokens != TOK.encode("a")  # "a" is in prompt 0
    assert out.sequences[1].tokens == TOK.encode("a")  # prompt 1 is padded but has no "a"


def test_stream_with_a_hf_byte_level_tokenizer_that_splits_characters() -> None:
    """Every token is one byte (no merges), so 世 and 🙂 arrive over 3-4 tokens each."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tnlm.generation import HFTokenizer

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=258, special_tokens=["<pad>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    raw.train_from_iterator(["x"], trainer=trainer)
    tok = HFTokenizer(PreTrainedTokenizerFast(tokenizer_object=raw, pad_token="<pad>", eos_token="</s>"))
    text = "héllo 世界 🙂!"
    script = tok.encode(text)
    assert len(script) == len(text.encode("utf-8"))
    model = ScriptedLM(script + [tok.eos_token_id], vocab_size=258)
    pieces = list(stream(model, tok, "p", max_new_tokens=100))
    assert "".join(pieces) == text
    assert all(p and "\ufffd" not in p for p in pieces)


def test_invalid_utf8_from_the_model_does_not_stall_the_stream() -> None:
    """Bytes that can never form a character are released as U+FFFD within a few tokens instead of
    being held back to the end; a real character after them still arrives whole."""
    from tnlm.generation.streaming import TextStream

    stream = TextStream(TOK)
    garbage = [TOK.BYTE_OFFSET + 0xFF] * 10  # 0xFF never occurs in UTF-8
    euro = [TOK.BYTE_OFFSET + b for b in "€".encode()]
    released = [stream.push(t) for t in garbage + euro]
    assert all(released[i] == "" for i in range(3))
    assert "".join(released[:10]).count("\ufffd") >= 7  # at most 3 tokens held back at any time
    assert released[-1].endswith("€") and "€" not in "".join(released[:-1])
    assert stream.text + stream.finish() == TOK.decode(garbage + euro)
