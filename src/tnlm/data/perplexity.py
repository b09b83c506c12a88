"""Self-cleaning: score documents with a small language model and drop the worst ones.

Any object with `score(texts) -> list[float]` (mean negative log-likelihood per unit, in nats) can
score: `NgramScorer` is a cheap character n-gram model trained on a reference set (hashed counts in
numpy, Dirichlet-smoothed back-off to shorter contexts), and `ModelScorer` wraps any Hugging Face causal
LM, tnlm's own models included."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import islice
from typing import Any, Protocol

import numpy as np

from tnlm.data.document import Document
from tnlm.errors import DataError
from tnlm.data.step import Filter, GlobalStep
from tnlm.data.text import ngram_hashes_by_order

MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class Scorer(Protocol):
    def score(self, texts: Sequence[str]) -> list[float]:
        """Mean negative log-likelihood per unit (character or token) of each text, in nats."""
        ...


def _mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser so that bucket indices use well-mixed bits."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint64(33))
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        return h ^ (h >> np.uint64(29))


class NgramScorer:
    """Character n-gram language model with hashed counts.

    p_k(c | last k-1 chars) = (N(ctx, c) + beta * p_{k-1}(c | shorter ctx)) / (N(ctx) + beta), down to
    a uniform distribution over `alphabet` symbols, so unseen characters get a finite cost."""

    def __init__(self, *, order: int = 5, buckets_log2: int = 22, beta: float = 2.0, alphabet: int = 1 << 16) -> None:
        self.order, self.mask = order, np.uint64((1 << buckets_log2) - 1)
        self.beta, self.alphabet = beta, alphabet
        self.gram_counts = np.zeros((order, 1 << buckets_log2), dtype=np.float32)
        self.ctx_counts = np.zeros((order, 1 << buckets_log2), dtype=np.float32)

    def _hashes(self, text: str) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per order k = 1..order: (bucket of the k-gram ending at each char, bucket of its context,
        the k - 1 chars before it)."""
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        padded = np.concatenate([np.full(self.order - 1, 0x110000, dtype=np.uint64), codes + np.uint64(1)])
        n, out = len(codes), []
        grams = list(ngram_hashes_by_order(padded, self.order))  # grams[k - 1][i] hashes padded[i : i + k]
        with np.errstate(over="ignore"):
            for k in range(1, self.order + 1):
                start = self.order - k  # where the k-gram ending at char 0 starts, and its context
                gram = grams[k - 1][start : start + n]
                ctx = grams[k - 2][start : start + n] if k > 1 else np.zeros(n, dtype=np.uint64)
                out.append((_mix(gram + np.uint64(k)) & self.mask, _mix(ctx + np.uint64(k)) & self.mask))
        return out

    def fit(self, texts: Iterable[str], *, batch_chars: int = 1 << 20) -> NgramScorer:
        batch: list[str] = []
        for text in texts:
            batch.append(text)
            if sum(map(len, batch)) >= batch_chars:
                self._count(batch)
                batch = []
        self._count(batch)
        if not self.ctx_counts[0].any():
            raise DataError("the n-gram scorer's reference set is empty: give reference text")
        return self

    def _count(self, texts: list[str]) -> None:
        per_text = [self._hashes(text) for text in texts if text]
        if not per_text:
            return
        size = self.gram_counts.shape[1]
        for k in range(self.order):
            self.gram_counts[k] += np.bincount(np.concatenate([h[k][0] for h in per_text]), minlength=size)
            self.ctx_counts[k] += np.bincount(np.concatenate([h[k][1] for h in per_text]), minlength=size)

    def nll(self, text: str) -> float:
        if not text:
            return 0.0
        p = np.full(len(text), 1.0 / self.alphabet)
        for k, (gram, ctx) in enumerate(self._hashes(text)):
            p = (self.gram_counts[k][gram] + self.beta * p) / (self.ctx_counts[k][ctx] + self.beta)
        return float(-np.log(p).mean())

    def score(self, texts: Sequence[str]) -> list[float]:
        return [self.nll(text) for text in texts]


class ModelScorer:
    """Scores with a Hugging Face causal LM: mean next-token negative log-likelihood."""

    def __init__(self, model: Any, tokenizer: Any, *, max_tokens: int = 1024) -> None:
        self.model, self.tokenizer, self.max_tokens = model.eval(), tokenizer, max_tokens

    @classmethod
    def from_pretrained(cls, path: str, *, max_tokens: int = 1024) -> ModelScorer:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import tnlm.models  # noqa: F401  (registers tnlm's model families with the Auto classes)

        return cls(AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path), max_tokens=max_tokens)

    def score(self, texts: Sequence[str]) -> list[float]:
        import torch

        scores = []
        for text in texts:
            ids = self.tokenizer(text, return_tensors="pt", truncation=True, max_length=self.max_tokens)["input_ids"]
            if ids.shape[1] < 2:
                scores.append(0.0)
                continue
            with torch.no_grad():
                logits = self.model(input_ids=ids).logits[0, :-1].float()  # (T-1, V)
            scores.append(float(torch.nn.functional.cross_entropy(logits, ids[0, 1:])))
        return scores


def build_scorer(config: dict[str, Any] | Scorer) -> Scorer:
    """A scorer from config: {type: ngram, reference: [paths] or "builtin", order: 5} or
    {type: model, path: DIR}; an object with `score` is returned as is."""
    if not isinstance(config, dict):
        if not hasattr(config, "score"):
            raise DataError("scorer must be a config mapping or an object with score(texts)")
        return config
    options = dict(config)
    kind = options.pop("type", "ngram")
    if kind == "model":
        return ModelScorer.from_pretrained(options["path"], max_tokens=options.get("max_tokens", 1024))
    if kind != "ngram":
        raise DataError(f"unknown scorer type {kind!r}: use ngram or model")
    reference = options.pop("reference", "builtin")
    max_docs = options.pop("max_docs", 2000)
    return NgramScorer(**options).fit(islice(_reference_texts(reference), max_docs))


def _reference_texts(reference: str | list[str]) -> Iterable[str]:
    from tnlm.data.sources import BuiltinSource, FileSource

    source = BuiltinSource(kind="docs", num_shards=1) if reference == "builtin" else FileSource(paths=reference)
    return (doc.text for doc in source.documents())


class PerplexityFilter(Filter):
    """Removes documents whose perplexity under the scorer exceeds `max_perplexity`."""

    name = "perplexity"

    def __init__(self, *, scorer: dict[str, Any] | Scorer, max_perplexity: float) -> None:
        super().__init__()
        self.scorer, self.max_nll = build_scorer(scorer), math.log(max_perplexity)

    def reject_reason(self, doc: Document) -> str | None:
        return "high_perplexity" if self.scorer.score([doc.text])[0] > self.max_nll else None


class PerplexityTail(GlobalStep):
    """Removes the `drop_fraction` of documents with the highest perplexity (scored over all of them)."""

    name = "perplexity_tail"
    cheap_features = False  # a model's scores: not computed for documents an earlier dedup removes

    def __init__(self, *, scorer: dict[str, Any] | Scorer, drop_fraction: float = 0.1, batch_size: int = 64) -> None:
        super().__init__()
        if not 0 <= drop_fraction < 1:
            raise DataError("perplexity_tail: drop_fraction must be in [0, 1)")
        self.scorer, self.drop_fraction, self.batch_size = build_scorer(scorer), drop_fraction, batch_size
        self.threshold: float | None = None

    def features(self, docs: list[Document]) -> list[float]:
        scores: list[float] = []
        for i in range(0, len(docs), self.batch_size):
            scores += self.scorer.score([doc.text for doc in docs[i : i + self.batch_size]])
        return scores

    def decide(self, features: Iterable[tuple[str, float]]) -> dict[str, str]:
        keyed = list(features)
        if not keyed:
            return {}
        values = np.asarray([score for _, score in keyed])
        n_drop = int(round(self.drop_fraction * len(values)))
        order = np.argsort(-values, kind="stable")[:n_drop]
        self.threshold = float(np.exp(values[order[-1]])) if n_drop else None
        return {keyed[i][0]: "high_perplexity" for i in order}
