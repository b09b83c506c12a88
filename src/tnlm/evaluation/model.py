"""The model under evaluation: weights, tokenizer, and how the family handles long inputs.

TransNormer and Infini-attention carry a bounded state from chunk to chunk, so they read a document
of any length in one streaming pass; a Transformer (or any other causal LM) has a maximum context and
is evaluated in windows. Tokenization follows lm-evaluation-harness, so that scores are comparable:
a context is encoded with the tokenizer's own special tokens, a continuation is what encoding the
context and continuation together adds after the context, and an empty context is replaced by one
prefix token (BOS, else EOS).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tnlm.errors import ConfigError
from tnlm.generation.tokenizer import TextTokenizer, load_tokenizer

# families whose decoding state has a fixed size: one streaming pass over any length
STREAMING_MODEL_TYPES = frozenset({"transnormer", "tnlm_infini"})
# families whose cache objects tnlm.evaluation.cache can copy row by row (context reuse)
TNLM_MODEL_TYPES = frozenset({"transnormer", "tnlm_transformer", "tnlm_infini"})


@dataclass
class EvalModel:
    """A causal LM and its tokenizer, as the evaluation code sees them."""

    model: nn.Module
    tokenizer: TextTokenizer
    name: str = "model"

    @property
    def model_type(self) -> str:
        return str(getattr(self.model.config, "model_type", ""))

    @property
    def streaming(self) -> bool:
        """True when the family reads any length in one pass with a fixed-size state."""
        return self.model_type in STREAMING_MODEL_TYPES

    @property
    def reuses_context(self) -> bool:
        """True when a computed context's cache can be copied for every choice."""
        return self.model_type in TNLM_MODEL_TYPES

    @property
    def max_length(self) -> int | None:
        """The longest input the model takes in one forward, or None for streaming families."""
        if self.streaming:
            return None
        return int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    @property
    def training_length(self) -> int | None:
        """The sequence length the model was trained on, when its config says so."""
        cfg = self.model.config
        for key in ("training_seq_len", "max_position_embeddings", "seq_length", "max_seq_len"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def prefix_token_id(self) -> int:
        """The token an empty context is replaced by: BOS if the tokenizer has one, else EOS."""
        tok = self.tokenizer
        hf = getattr(tok, "hf", None)
        bos = getattr(hf, "bos_token_id", None) if hf is not None else getattr(tok, "bos_token_id", None)
        if bos is not None:
            return int(bos)
        if tok.eos_token_id is None:
            raise ConfigError("the tokenizer has neither a BOS nor an EOS token to start an empty context with")
        return int(tok.eos_token_id)

    def encode(self, text: str) -> list[int]:
        """Text as the harness encodes a context: with the tokenizer's own special tokens."""
        return self.tokenizer.encode(text, add_special_tokens=True)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids), split as lm-evaluation-harness splits them: trailing
        spaces of the context move to the continuation, and the continuation's ids are those that
        encoding the whole text adds after the context's."""
        if not context:
            cont = self.tokenizer.encode(continuation, add_special_tokens=False)
            if cont and cont[0] == self.prefix_token_id:
                return cont[:1], cont[1:]
            return [self.prefix_token_id], cont
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        return ctx, whole[len(ctx) :]


def load_eval_model(
    name_or_dir: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
) -> EvalModel:
    """A preset (random weights, byte tokenizer) or a model directory (its weights and tokenizer)."""
    from tnlm.models import create_model, load_config

    # the tokenizer first: a model directory without one fails before its weights are read
    tokenizer = load_tokenizer(name_or_dir, vocab_size=load_config(name_or_dir).vocab_size)
    model = create_model(name_or_dir, dtype=dtype, device=device, seed=0).eval()
    return EvalModel(model=model, tokenizer=tokenizer, name=str(name_or_dir))
