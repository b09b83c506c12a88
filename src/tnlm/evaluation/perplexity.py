"""Perplexity and bits per byte of documents, in one streaming pass or in windows.

Every token of a document is scored; the first one is conditioned on a prefix token (BOS, else
EOS), as lm-evaluation-harness's rolling log-likelihood does, and a document is encoded with the
tokenizer's own special tokens, as the harness encodes it.

- stream: the document runs in chunks through the model with its cache, so every token sees the
  whole document before it. For TransNormer and Infini-attention the state has a fixed size: any
  length in constant memory. (A Transformer's KV cache grows with the document.)
- window: independent windows of `window` tokens; after the first, each window scores its last
  `stride` tokens and conditions on the `window - stride` before them (stride = window: disjoint
  windows, the harness's default). For models with a maximum context.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from tnlm.errors import ConfigError
from tnlm.evaluation.batching import model_forward, pad_batch
from tnlm.evaluation.model import EvalModel

MODES = ("auto", "stream", "window")


@dataclass(frozen=True)
class Document:
    text: str | None = None  # UTF-8 text (bytes and words are counted on it)
    ids: list[int] | None = None  # already tokenized (token shards); text, if known, counts bytes


@dataclass
class PerplexityResult:
    nll: float  # summed negative log-likelihood, nats
    tokens: int
    bytes: int
    words: int
    documents: int
    mode: str  # "stream" or "window"
    window: int | None = None
    stride: int | None = None
    chunk_size: int | None = None

    @property
    def token_perplexity(self) -> float:
        return math.exp(self.nll / self.tokens) if self.tokens else math.nan

    @property
    def byte_perplexity(self) -> float:
        return math.exp(self.nll / self.bytes) if self.bytes else math.nan

    @property
    def bits_per_byte(self) -> float:
        return self.nll / self.bytes / math.log(2) if self.bytes else math.nan

    @property
    def word_perplexity(self) -> float:
        return math.exp(self.nll / self.words) if self.words else math.nan

    def describe(self) -> str:
        if self.mode == "stream":
            return f"one streaming pass per document with the model's state (chunks of {self.chunk_size} tokens)"
        return f"windows of {self.window} tokens, stride {self.stride}"

    def metrics(self) -> dict[str, float]:
        return {"token_perplexity": self.token_perplexity, "byte_perplexity": self.byte_perplexity,
                "bits_per_byte": self.bits_per_byte, "word_perplexity": self.word_perplexity}  # fmt: skip


def count_words(text: str) -> int:
    """Words as the harness counts them: pieces between runs of whitespace."""
    return len(re.split(r"\s+", text))


def rolling_windows(tokens: list[int], *, prefix: int, window: int, stride: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, targets): the last len(targets) positions of each input predict its targets;
    together the targets are every token exactly once."""
    if not tokens:
        return []
    first = min(window, len(tokens))
    out = [([prefix] + tokens[: first - 1], tokens[:first])]
    done = first
    while done < len(tokens):
        end = done + min(stride, len(tokens) - done)
        out.append((tokens[max(0, end - window - 1) : end - 1], tokens[done:end]))
        done = end
    return out


def _logprob_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return F.log_softmax(logits.float(), dim=-1).gather(-1, targets[:, None]).sum().item()


@torch.inference_mode()
def _window_nll(model: EvalModel, docs: list[list[int]], *, window: int, stride: int, batch_size: int, bar: tqdm) -> list[float]:
    work = [(d, inp, tgt) for d, toks in enumerate(docs)
            for inp, tgt in rolling_windows(toks, prefix=model.prefix_token_id, window=window, stride=stride)]  # fmt: skip
    work.sort(key=lambda w: -len(w[1]))
    nll = [0.0] * len(docs)
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        ids, mask = pad_batch([inp for _, inp, _ in batch], left=True, device=model.device)
        keep = max(len(tgt) for _, _, tgt in batch)
        logits, _ = model_forward(model.model, ids, mask, keep=keep)  # (B, keep, V); left padding right-aligns
        for b, (d, _, tgt) in enumerate(batch):
            nll[d] -= _logprob_sum(logits[b, keep - len(tgt) :], torch.tensor(tgt, device=ids.device))
            bar.update(len(tgt))
    return nll


@torch.inference_mode()
def _stream_nll(model: EvalModel, docs: list[list[int]], *, chunk_size: int, batch_size: int, bar: tqdm) -> list[float]:
    """Documents of similar length together, right-padded (padding only follows a document's end,
    so it never affects its tokens), fed chunk by chunk with the cache."""
    order = sorted(range(len(docs)), key=lambda d: -len(docs[d]))
    nll = [0.0] * len(docs)
    for start in range(0, len(order), batch_size):
        group = [d for d in order[start : start + batch_size] if docs[d]]
        if not group:
            continue
        inputs = [[model.prefix_token_id] + docs[d][:-1] for d in group]
        ids, _ = pad_batch(inputs, left=False, device=model.device)
        cache = None
        for c in range(0, ids.shape[1], chunk_size):
            logits, cache = model_forward(model.model, ids[:, c : c + chunk_size], None, cache=cache, use_cache=True)
            for b, d in enumerate(group):
                n = min(len(docs[d]), c + chunk_size) - c
                if n > 0:
                    targets = torch.tensor(docs[d][c : c + n], device=ids.device)
                    nll[d] -= _logprob_sum(logits[b, :n], targets)
                    bar.update(n)
    return nll


def resolve_mode(model: EvalModel, *, mode: str, window: int | None, stride: int | None) -> tuple[str, int | None, int | None]:
    """(mode, window, stride) after defaults: stream for families with a state, else windows of the
    model's maximum context; stride defaults to the window (disjoint windows)."""
    if mode not in MODES:
        raise ConfigError(f"perplexity mode must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "auto":
        mode = "stream" if model.streaming and window is None else "window"
    if mode == "stream":
        if window is not None or stride is not None:
            raise ConfigError("a streaming pass has no window or stride; drop them or use mode='window'")
        return mode, None, None
    window = window or model.max_length
    if window is None:
        raise ConfigError("window mode needs a window size for a model without a maximum context (e.g. window=2048)")
    if model.max_length is not None and window > model.max_length:
        raise ConfigError(f"window {window} exceeds the model's maximum context of {model.max_length} tokens")
    stride = stride or window
    if not 1 <= stride <= window:
        raise ConfigError(f"stride must be between 1 and the window ({window}), got {stride}")
    return mode, window, stride


def document_nll(
    model: EvalModel,
    docs: list[list[int]],
    *,
    mode: str = "auto",
    window: int | None = None,
    stride: int | None = None,
    chunk_size: int = 512,
    batch_size: int = 4,
    progress: bool = False,
) -> list[float]:
    """Negative log-likelihood (nats) of each token list, every token scored."""
    mode, window, stride = resolve_mode(model, mode=mode, window=window, stride=stride)
    if chunk_size < 1 or batch_size < 1:
        raise ConfigError("chunk_size and batch_size must be >= 1")
    too_big = [i for i, d in enumerate(docs) if any(t < 0 or t >= model.vocab_size for t in d)]
    if too_big:
        raise ConfigError(f"document {too_big[0]} holds token ids outside the model's vocabulary of {model.vocab_size}; "
                          "the data was tokenized with another tokenizer")  # fmt: skip
    longest = max((len(d) for d in docs), default=0)
    if mode == "stream" and model.max_length is not None and longest > model.max_length:
        raise ConfigError(f"a document of {longest} tokens is longer than the model's {model.max_length}-token context; "
                          "use mode='window' for this model")  # fmt: skip
    with tqdm(total=sum(len(d) for d in docs), desc="perplexity", unit="tok", disable=not progress, leave=False) as bar:
        if mode == "stream":
            return _stream_nll(model, docs, chunk_size=chunk_size, batch_size=batch_size, bar=bar)
        return _window_nll(model, docs, window=window, stride=stride, batch_size=batch_size, bar=bar)


def perplexity(
    model: EvalModel,
    documents: Iterable[Document],
    *,
    mode: str = "auto",
    window: int | None = None,
    stride: int | None = None,
    chunk_size: int = 512,
    batch_size: int = 4,
    limit: int | None = None,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity, bits per byte and word perplexity over documents (texts or token ids)."""
    token_lists, n_bytes, n_words = [], 0, 0
    for doc in documents:
        if limit is not None and len(token_lists) >= limit:
            break
        ids = list(doc.ids) if doc.ids is not None else model.encode(doc.text or "")
        text = doc.text if doc.text is not None else model.tokenizer.decode(ids)
        if not ids:
            continue
        token_lists.append(ids)
        n_bytes += len(text.encode("utf-8"))
        n_words += count_words(text)
    if not token_lists:
        raise ConfigError("no documents with text to score; check the data path and its text field")
    mode, window, stride = resolve_mode(model, mode=mode, window=window, stride=stride)
    nll = document_nll(model, token_lists, mode=mode, window=window, stride=stride, chunk_size=chunk_size,
                       batch_size=batch_size, progress=progress)  # fmt: skip
    return PerplexityResult(
        nll=sum(nll), tokens=sum(len(t) for t in token_lists), bytes=n_bytes, words=n_words,
        documents=len(token_lists), mode=mode, window=window, stride=stride,
        chunk_size=chunk_size if mode == "stream" else None,
    )  # fmt: skip
