"""The `tnlm` model of lm-evaluation-harness: every tnlm family (and any causal LM tnlm loads).

    lm_eval.simple_evaluate(model="tnlm", model_args="pretrained=DIR", tasks=[...])
    tnlm-lm-eval --model tnlm --model_args pretrained=DIR,batch_size=16 --tasks piqa --tnlm-data-dir data/eval

model_args: pretrained (a model directory or a preset name), dtype (float32 / bfloat16), device,
batch_size, reuse_context (copy an item's context cache for each choice; default True), chunk_size
(tokens per forward in a streaming pass), max_length (override the model's maximum context).

Requests go through tnlm's own scorer, so the harness and `tnlm eval` give the same log-likelihoods:
the choices of one document share their context computation; rolling log-likelihoods use one
streaming pass for TransNormer and Infini-attention and disjoint windows of the maximum context
otherwise (the harness's own scheme); generation is greedy unless the task asks to sample.
"""

from __future__ import annotations

import logging

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from tqdm import tqdm

from tnlm.evaluation.model import EvalModel, load_eval_model
from tnlm.evaluation.perplexity import document_nll
from tnlm.evaluation.scorer import TokenRequest, score_tokens

logger = logging.getLogger(__name__)
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "auto": "float32"}


def _device(device: str | None) -> str:
    """The harness's CLI asks for cuda:0 by default: fall back to the CPU, as its HF backend does."""
    import torch

    if device is None or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        if device is not None:
            logger.warning("device %s is not available; using %s", device, chosen)
        return chosen
    return str(device)


def _batch_size(value: int | str | None) -> int:
    if value is None or str(value).startswith("auto"):
        return 16
    return max(1, int(value))


@register_model("tnlm")
class TnlmLM(LM):
    def __init__(
        self,
        pretrained: str | EvalModel,
        *,
        dtype: str = "float32",
        device: str | None = None,
        batch_size: int | str | None = 16,
        max_batch_size: int | None = None,
        reuse_context: bool = True,
        chunk_size: int = 512,
        max_length: int | None = None,
        reference_decoding: bool = False,
    ) -> None:
        super().__init__()
        import torch

        if isinstance(pretrained, EvalModel):
            self.tnlm = pretrained
        else:
            name = _DTYPES.get(str(dtype))
            if name is None:
                raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
            self.tnlm = load_eval_model(pretrained, dtype=getattr(torch, name), device=_device(device))
        self.batch_size = min(_batch_size(batch_size), max_batch_size or 1 << 30)
        self.reuse_context = bool(reuse_context)
        self.chunk_size = int(chunk_size)
        self.reference_decoding = str(reference_decoding).lower() in ("1", "true", "yes")
        self._max_length = int(max_length) if max_length else None

    @property
    def max_length(self) -> int | None:
        return self._max_length or self.tnlm.max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tnlm.name.replace("/", "__")

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """(context, continuation) -> (log-likelihood, greedy); one document's choices form a group."""
        token_requests = []
        for req in requests:
            context, continuation = req.args
            ctx, cont = self.tnlm.encode_pair(context, continuation)
            group = (req.task_name, req.doc_id) if req.doc_id is not None else None
            token_requests.append(TokenRequest(ctx, cont, group=group))
        with tqdm(total=len(requests), desc="tnlm loglikelihood", disable=disable_tqdm) as bar:
            scores = score_tokens(
                self.tnlm.model, token_requests, batch_size=self.batch_size,
                reuse_context=self.reuse_context and self.tnlm.reuses_context, max_length=self.max_length,
                on_progress=bar.update,
            )  # fmt: skip
        return [(s.logprob, s.is_greedy) for s in scores]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts, every token scored (the first given a BOS/EOS prefix)."""
        docs = [self.tnlm.encode(req.args[0]) for req in requests]
        mode = "stream" if self.tnlm.streaming else "window"
        window = None if mode == "stream" else self.max_length
        nll = document_nll(self.tnlm, docs, mode=mode, window=window, chunk_size=self.chunk_size,
                           batch_size=max(1, self.batch_size // 4), progress=not disable_tqdm)  # fmt: skip
        return [-x for x in nll]

    def _generation_settings(self, kwargs: dict | None) -> tuple[tuple[str, ...], int, object]:
        """(stop strings, max new tokens, sampling) of one request's generation kwargs."""
        from tnlm.generation import SamplingParams

        kwargs = dict(kwargs or {})
        until = kwargs.get("until") or []
        until = (until,) if isinstance(until, str) else tuple(until)
        sample = bool(kwargs.get("do_sample"))
        sampling = SamplingParams(temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
                                  top_p=float(kwargs.get("top_p", 1.0)), top_k=int(kwargs.get("top_k", 0) or 0))  # fmt: skip
        return until, int(kwargs.get("max_gen_toks", 256)), sampling

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continue each context until one of its `until` strings, EOS or max_gen_toks tokens;
        requests with the same settings run in batches (each gets the text it would get alone)."""
        from tnlm.generation import generate

        groups: dict[tuple, list[int]] = {}
        settings = [self._generation_settings(req.args[1]) for req in requests]
        for i, (until, max_new, sampling) in enumerate(settings):
            groups.setdefault((until, max_new, repr(sampling)), []).append(i)
        out: list[str] = [""] * len(requests)
        with tqdm(total=len(requests), desc="tnlm generate_until", disable=disable_tqdm) as bar:
            for members in groups.values():
                until, max_new, sampling = settings[members[0]]
                for start in range(0, len(members), self.batch_size):
                    batch = members[start : start + self.batch_size]
                    prompts = [self.tnlm.encode(requests[i].args[0]) for i in batch]
                    if self.max_length is not None:  # left-truncate, as the harness does
                        prompts = [ids[-max(1, self.max_length - max_new) :] for ids in prompts]
                    result = generate(self.tnlm.model, self.tnlm.tokenizer, prompts, max_new_tokens=max_new,
                                      sampling=sampling, stop=until, seed=0, prefill_chunk_size=self.chunk_size,
                                      reference=self.reference_decoding)  # fmt: skip
                    for i, seq in zip(batch, result.sequences):
                        out[i] = _cut(seq.text, until)
                    bar.update(len(batch))
        return out


def _cut(text: str, until: tuple[str, ...]) -> str:
    """The text before the first stop string (the engine already stops there; this also covers a
    stop string that only completes at the last token)."""
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text
