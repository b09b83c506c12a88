"""Text <-> token ids for generation: a byte-level tokenizer for preset models (random weights, no
trained tokenizer) and an adapter around a model directory's Hugging Face tokenizer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Protocol

from tnlm.chat_template import CHAT_TEMPLATE_JINJA, MARKER_TOKENS
from tnlm.errors import CheckpointError, ConfigError


class TextTokenizer(Protocol):
    """What the generation engine needs from a tokenizer."""

    eos_token_id: int | None
    pad_token_id: int

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """add_special_tokens=False: no BOS or similar, for text that continues a sequence;
        split_special_tokens=True: special-token strings in `text` are encoded as plain text (what
        tnlm.chat_template.encode_chat does with message content)."""
        ...

    def decode(self, ids: list[int]) -> str: ...

    def token_id(self, token: str) -> int | None: ...


class ByteTokenizer:
    """One token per UTF-8 byte, after a few special tokens: <pad>=0, <s>=1, </s>=2 (the TransNormer
    config defaults), then the chat markers. Any text round-trips; 264 ids fit every preset's vocab."""

    SPECIALS: tuple[str, ...] = ("<pad>", "<s>", "</s>", *MARKER_TOKENS)
    BYTE_OFFSET = 8

    def __init__(self) -> None:
        self.pad_token_id, self.bos_token_id, self.eos_token_id = 0, 1, 2
        self._special_ids = {tok: i for i, tok in enumerate(self.SPECIALS)}
        self._marker_re = re.compile("|".join(re.escape(t) for t in MARKER_TOKENS))

    @property
    def vocab_size(self) -> int:
        return self.BYTE_OFFSET + 256

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        """Bytes of the text; chat markers become their single special ids unless split_special_tokens
        (then they are bytes like any text). It adds no BOS."""
        if split_special_tokens:
            return [self.BYTE_OFFSET + b for b in text.encode("utf-8")]
        ids, pos = [], 0
        for m in self._marker_re.finditer(text):
            ids += [self.BYTE_OFFSET + b for b in text[pos : m.start()].encode("utf-8")]
            ids.append(self._special_ids[m.group()])
            pos = m.end()
        return ids + [self.BYTE_OFFSET + b for b in text[pos:].encode("utf-8")]

    def decode(self, ids: list[int]) -> str:
        """Invalid or incomplete UTF-8 becomes U+FFFD; pad/bos/eos and the unassigned ids below the
        bytes (which a model's vocabulary still holds, so it can sample them) vanish; markers stay visible."""
        out, buf = [], bytearray()
        for i in ids:
            if i >= self.BYTE_OFFSET:
                buf.append((i - self.BYTE_OFFSET) % 256)
                continue
            out.append(buf.decode("utf-8", errors="replace"))
            buf.clear()
            if 3 <= i < len(self.SPECIALS):
                out.append(self.SPECIALS[i])
        out.append(buf.decode("utf-8", errors="replace"))
        return "".join(out)

    def token_id(self, token: str) -> int | None:
        return self._special_ids.get(token)

    def to_hf(self) -> Any:  # transformers.PreTrainedTokenizerFast
        """The same tokenizer as a Hugging Face one (byte-fallback BPE without merges), so a preset model
        saved with it works wherever a tokenizer folder is expected. Ids are equal for any text, except
        that text spelling <pad>, <s> or </s> becomes that special token, as in Hugging Face tokenizers."""
        from tokenizers import Tokenizer, decoders, models
        from transformers import PreTrainedTokenizerFast

        vocab = {token: i for i, token in enumerate(self.SPECIALS)}
        vocab.update({f"<0x{b:02X}>": self.BYTE_OFFSET + b for b in range(256)})
        tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
        tok.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
            additional_special_tokens=list(MARKER_TOKENS), chat_template=CHAT_TEMPLATE_JINJA,
            clean_up_tokenization_spaces=False,
        )  # fmt: skip

    def save_pretrained(self, folder: str | Path) -> None:
        """Write it as a Hugging Face tokenizer folder, e.g. beside `model.save_pretrained(folder)`."""
        self.to_hf().save_pretrained(str(folder))


class HFTokenizer:
    """A Hugging Face tokenizer behind the TextTokenizer protocol."""

    def __init__(self, tokenizer) -> None:  # transformers.PreTrainedTokenizerBase
        self.hf = tokenizer
        self.eos_token_id = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        # the pad id only fills masked positions, so any valid id serves when the tokenizer has none
        self.pad_token_id = pad if pad is not None else (self.eos_token_id or 0)

    def encode(self, text: str, *, add_special_tokens: bool = True, split_special_tokens: bool = False) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=add_special_tokens, split_special_tokens=split_special_tokens)
        return list(ids)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def token_id(self, token: str) -> int | None:
        tid = self.hf.convert_tokens_to_ids(token)
        return None if tid is None or tid == self.hf.unk_token_id else int(tid)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def load_tokenizer(name_or_dir: str | Path, *, vocab_size: int) -> TextTokenizer:
    """A model directory's own tokenizer, or the byte tokenizer for a preset name."""
    path = Path(name_or_dir)
    if not path.is_dir():
        if vocab_size < ByteTokenizer.BYTE_OFFSET + 256:
            raise ConfigError(f"vocab_size {vocab_size} is too small for the byte tokenizer (needs 264)")
        return ByteTokenizer()
    return tokenizer_from_folder(path, vocab_size=vocab_size)


def tokenizer_from_folder(folder: str | Path, *, vocab_size: int) -> HFTokenizer:
    """The Hugging Face tokenizer saved in `folder` (a model directory or a tokenizer folder),
    checked to fit a model of `vocab_size` tokens. Cheap: call it before loading the weights."""
    path = Path(folder)
    if not path.is_dir():
        raise CheckpointError(f"tokenizer folder {path} does not exist; check the path")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise CheckpointError(
            f"{path} has no tokenizer ({' / '.join(_TOKENIZER_FILES)}): save one there with "
            f"tokenizer.save_pretrained({str(path)!r}) (for a preset's byte tokenizer: "
            "ByteTokenizer().save_pretrained), or pass --tokenizer DIR"
        )
    from transformers import AutoTokenizer

    try:
        hf = AutoTokenizer.from_pretrained(str(path))
    except Exception as err:  # tokenizers raises bare Exceptions for damaged files
        reason = " ".join(str(err).split())[:200]
        raise CheckpointError(f"the tokenizer in {path} cannot be read ({type(err).__name__}: {reason}); "
                              "restore its files from where they came from") from None
    needed = max(hf.get_vocab().values(), default=-1) + 1  # ids may leave gaps
    if needed > vocab_size:
        raise CheckpointError(f"the tokenizer in {path} has {needed} tokens but the model has only {vocab_size}; "
                              "use the tokenizer the model was trained with")
    return HFTokenizer(hf)
