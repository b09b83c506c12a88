"""Speed of the compared models, side by side: training tokens/s at growing sequence lengths and
decoding ms/token at growing context lengths.

Each model is built fresh from its run's configuration (the same architecture and size as the model
that trains; speed does not depend on the weights). At each length the models take turns, step by step,
so that a slow spell of a shared machine hits all of them; each keeps its fastest step (training) or
its best round (decoding). A length beyond a model's maximum context is skipped, with the reason.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from torch import nn

from tnlm.generation.speed import DecodeTiming, prefill, random_context, timed_steps
from tnlm.training.build import build_model, pick_device, pick_precision, read_data_info
from tnlm.training.config import TrainConfig
from tnlm.training.throughput import throughput_trainer, time_train_step
from tnlm.training.trainer import seed_everything

Log = Callable[[str], None]
PREFILL_CHUNK = 256  # every model prefills in chunks of this many tokens (as generate() can)


def fresh_model(config: TrainConfig) -> nn.Module:
    """The model a run's configuration trains, newly initialised, in float32 on the CPU."""
    seed_everything(config.seed)
    return build_model(config.model, data=read_data_info(config.data), seed=config.seed)


def max_context(model: nn.Module) -> int | None:
    """The longest input the model was built for (None: no limit, a recurrent state)."""
    if getattr(model.config, "model_type", "") == "transnormer":
        return None
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if value else None


def _beyond(model: nn.Module, length: int) -> str | None:
    limit = max_context(model)
    return f"beyond its {limit}-token context" if limit is not None and length > limit else None


def train_speed(configs: dict[str, TrainConfig], *, lengths: tuple[int, ...], tokens: int, repeats: int,
                log: Log) -> dict[str, list[dict]]:  # fmt: skip
    """{model name: [{length, batch, tokens_per_s, step_s} or {length, skipped}]}; `tokens` per step
    at every length (batch = tokens / length, at least 1)."""
    out: dict[str, list[dict]] = {name: [] for name in configs}
    for length in lengths:
        batch = max(1, tokens // length)
        trainers, best = {}, {}
        for name, cfg in configs.items():
            device = pick_device(cfg.train.device)
            model = fresh_model(cfg)
            if reason := _beyond(model, length):
                out[name].append({"length": length, "skipped": reason})
                continue
            trainers[name] = throughput_trainer(model, batch=batch, seq_len=length, device=device,
                                                precision=pick_precision(cfg.train.precision, device))  # fmt: skip
            best[name] = math.inf
        for i in range(1 + repeats):  # one warm-up step, then the timed ones, the models taking turns
            for name, trainer in trainers.items():
                seconds = time_train_step(trainer)
                if i:
                    best[name] = min(best[name], seconds)
        for name in trainers:
            rate = batch * length / best[name]
            out[name].append({"length": length, "batch": batch, "tokens_per_s": rate, "step_s": best[name]})
        log(f"training speed at length {length}: "
            + ", ".join(f"{n} {batch * length / best[n]:,.0f} tokens/s" for n in trainers))  # fmt: skip
    return out


def decode_speed(configs: dict[str, TrainConfig], *, contexts: tuple[int, ...], new_tokens: int, rounds: int,
                 log: Log) -> dict[str, list[dict]]:  # fmt: skip
    """{model name: [{context, prefill_s, ms_per_token, ..., state_bytes} or {context, skipped}]}: after a
    prefill of `context` random tokens, `rounds` rounds of `new_tokens` greedy steps, the models taking
    turns round by round."""
    models = {name: fresh_model(cfg).to(pick_device(cfg.train.device)).eval() for name, cfg in configs.items()}
    out: dict[str, list[dict]] = {name: [] for name in configs}
    for context in contexts:
        running = {}
        for name, model in models.items():
            if reason := _beyond(model, context + rounds * new_tokens):
                out[name].append({"context": context, "skipped": reason})
                continue
            state, logits, seconds = prefill(model, random_context(model, context), chunk_size=PREFILL_CHUNK)
            running[name] = (state, logits, DecodeTiming(context=context, prefill_s=seconds))
        for _ in range(rounds):
            for name, (state, logits, timing) in running.items():
                seconds, logits = timed_steps(state, logits, new_tokens)
                timing.steps += seconds
                timing.round_means.append(statistics.fmean(seconds))
                running[name] = (state, logits, timing)
        for name, (state, _, timing) in running.items():
            timing.state_bytes = state.nbytes()
            out[name].append(timing.to_dict())
        log(f"decoding after {context} tokens: "
            + ", ".join(f"{n} {t.ms_per_token:.2f} ms/token" for n, (_, _, t) in running.items()))  # fmt: skip
    return out
