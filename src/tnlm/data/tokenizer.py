"""BPE tokenizer training with Hugging Face `tokenizers`: digits split one by one, byte fallback with
all 256 byte tokens in the vocabulary (so any input round-trips), no normalisation (the data pipeline
normalises), and the special tokens a chat model needs: the markers and the template come from
`tnlm.chat_template`, the one definition. Saved as a Hugging Face tokenizer folder."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from tnlm.chat_template import CHAT_TEMPLATE_JINJA, MARKER_TOKENS
from tnlm.errors import DataError
from tnlm.data.text import cjk_fraction, words

BASE_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
SPECIAL_TOKENS = (*BASE_TOKENS, *MARKER_TOKENS)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
# a digit alone | letters (with one leading space) | other symbols (with one leading space) | spaces
PIECES = r"\p{N}| ?\p{L}+(?:\p{M}+\p{L}*)*| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"


def _pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(PIECES), behavior="isolated")


def _with_byte_tokens(trained: Tokenizer, special_tokens: Sequence[str]) -> Tokenizer:
    """Rebuild the trained BPE with the 256 byte tokens as ordinary vocabulary entries (BpeTrainer
    does not add them, and as special tokens `decode` would drop them)."""
    model = json.loads(trained.to_str())["model"]
    learned = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    vocab: dict[str, int] = {}
    for token in list(special_tokens) + list(BYTE_TOKENS) + [t for t, _ in learned]:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>", fuse_unk=False))
    tok.pre_tokenizer = _pre_tokenizer()
    tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens(list(special_tokens))
    return tok


def train_tokenizer(texts: Iterable[str], *, vocab_size: int, min_frequency: int = 2,
                    special_tokens: Sequence[str] = SPECIAL_TOKENS, show_progress: bool = True) -> Tokenizer:
    """Train a byte-fallback BPE of at most `vocab_size` entries (fewer if the data runs out of merges).

    The vocabulary is the special tokens, the 256 byte tokens, then single characters and merges. At
    most half of what remains goes to single characters, the most frequent ones; rarer characters are
    written as their UTF-8 bytes (byte fallback), so a corpus with thousands of distinct characters
    (CJK, emoji) still gets the requested size and every text still round-trips."""
    reserved = len(special_tokens) + len(BYTE_TOKENS)
    if vocab_size <= reserved + 1:
        raise DataError(f"vocab_size must exceed {reserved + 1} (special tokens + 256 byte tokens)")
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>"))
    tok.pre_tokenizer = _pre_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(BYTE_TOKENS), min_frequency=min_frequency,
                                  special_tokens=list(special_tokens), show_progress=show_progress,
                                  limit_alphabet=max(1, (vocab_size - reserved) // 2))
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() <= len(special_tokens):
        raise DataError("the tokenizer's training text is empty: give files with text in them")
    return _with_byte_tokens(tok, special_tokens)


def check_output(folder: str | Path, *, overwrite: bool) -> None:
    """Refuse a folder that holds a tokenizer already, unless `overwrite` (call it before training)."""
    existing = [name for name in TOKENIZER_FILES if (Path(folder) / name).exists()]
    if existing and not overwrite:
        raise DataError(f"{folder} holds a tokenizer already ({existing[0]}): pass --overwrite to replace it, "
                        "or choose another --output")


def save_tokenizer(tok: Tokenizer, folder: str | Path, *, overwrite: bool = False,
                   model_max_length: int = 1 << 20) -> None:
    """Save as a Hugging Face tokenizer folder (loads with `AutoTokenizer.from_pretrained`), with
    tnlm's chat template. A folder holding a tokenizer already is refused unless `overwrite`."""
    from transformers import PreTrainedTokenizerFast

    check_output(folder, overwrite=overwrite)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=[t for t in tok.get_added_tokens_decoder().values() if t.content not in BASE_TOKENS],
        clean_up_tokenization_spaces=False, model_max_length=model_max_length,
    )
    fast.chat_template = CHAT_TEMPLATE_JINJA
    # save beside the target, then move file by file: a crash leaves each file old or new, and other
    # files already in the folder (a model's weights) are left alone
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{folder.name}.") as tmp:
        fast.save_pretrained(tmp)
        for file in Path(tmp).iterdir():
            os.replace(file, folder / file.name)


def chars_per_token(tok: Tokenizer, texts: Sequence[str]) -> float:
    encodings = tok.encode_batch(list(texts), add_special_tokens=False)
    n_tokens = sum(len(e.ids) for e in encodings)
    return sum(map(len, texts)) / n_tokens if n_tokens else 0.0


def split_by_language(texts: Iterable[str]) -> tuple[list[str], list[str]]:
    """(English-like, Chinese-like) texts, by the share of CJK characters among words."""
    en, zh = [], []
    for text in texts:
        (zh if cjk_fraction(words(text)) > 0.3 else en).append(text)
    return en, zh


def held_out(texts: Iterable[str], every: int = 20) -> tuple[Iterator[str], list[str]]:
    """Split a stream of texts: every `every`-th one is held out for evaluation."""
    kept: list[str] = []

    def train() -> Iterator[str]:
        for i, text in enumerate(texts):
            if i % every == every - 1:
                kept.append(text)
            else:
                yield text

    return train(), kept
