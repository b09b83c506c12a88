"""The chat template's marker tokens in the tokenizer and in the model's embedding.

A tokenizer made by `tnlm tokenizer train` holds the markers already; another model's may not. Missing
markers are added as special tokens; when their ids lie beyond the embedding, the embedding (and an
untied head) grows to fit. Every new row starts at the mean of the rows the model had: a vector the
model already reads as an ordinary token, rather than a random one whose scale it has never seen
(a random head row could outvote trained tokens in the first steps). Full fine-tuning trains those rows
with the rest; LoRA makes them trainable rows of the adapter (see lora.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tnlm.chat_template import CHAT_TEMPLATE_JINJA, MARKER_TOKENS
from tnlm.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class AddedTokens:
    """What fitting the markers changed: the embedding's size before and after, and the ids whose rows
    were (re)initialised."""

    base_vocab_size: int
    vocab_size: int
    new_ids: tuple[int, ...]

    def to_dict(self) -> dict:
        return {"base_vocab_size": self.base_vocab_size, "vocab_size": self.vocab_size, "new_ids": list(self.new_ids)}

    @classmethod
    def from_dict(cls, d: dict) -> AddedTokens:
        return cls(int(d["base_vocab_size"]), int(d["vocab_size"]), tuple(int(i) for i in d["new_ids"]))


def load_hf_tokenizer(folder: str | Path, *, what: str):
    """The Hugging Face tokenizer of `folder` (a model directory or a tokenizer folder)."""
    path = Path(folder)
    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise CheckpointError(f"{what} {path} has no tokenizer (tokenizer.json): set data.tokenizer to the folder "
                              "`tnlm tokenizer train` wrote, or to the model's original directory")  # fmt: skip
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def add_markers(tokenizer) -> list[str]:
    """Add the chat markers the tokenizer lacks (as special tokens); returns those added. The template's
    Jinja twin becomes the tokenizer's chat_template, so `apply_chat_template` writes the same text."""
    vocab = tokenizer.get_vocab()
    missing = [t for t in MARKER_TOKENS if t not in vocab]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE_JINJA
    return missing


def fit_embeddings(model: nn.Module, *, vocab_size: int, new_ids: list[int]) -> AddedTokens:
    """Grow the embedding (and an untied head) to `vocab_size` rows if smaller, then set the rows of
    `new_ids` to the mean of the rows the model had."""
    base = model.get_input_embeddings().weight.shape[0]
    if vocab_size > base:
        model.resize_token_embeddings(vocab_size, mean_resizing=False)
    added = AddedTokens(base_vocab_size=base, vocab_size=max(base, vocab_size), new_ids=tuple(sorted(new_ids)))
    init_new_rows(model, added)
    return added


@torch.no_grad()
def init_new_rows(model: nn.Module, added: AddedTokens) -> None:
    """Rows `added.new_ids` of the embedding and of an untied head := the mean of the first
    `added.base_vocab_size` rows (float32 sums: deterministic for the same weights)."""
    if not added.new_ids:
        return
    ids = torch.tensor(added.new_ids)
    tables = {id(m.weight): m.weight for m in (model.get_input_embeddings(), model.get_output_embeddings())
              if m is not None}  # fmt: skip
    for weight in tables.values():
        mean = weight[: added.base_vocab_size].float().mean(dim=0)
        weight[ids] = mean.to(weight.dtype)


def check_vocab(tokenizer, model: nn.Module, *, tokenizer_dir: Path) -> None:
    """The tokenizer must be the model's: its ids (before markers are added) fit the embedding."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise ConfigError(f"the tokenizer at {tokenizer_dir} has {len(tokenizer)} tokens but the model's embedding "
                          f"only {rows} rows: it is not this model's tokenizer; set data.tokenizer to the right one")
